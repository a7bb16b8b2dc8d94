// The control socket's client (control_socket.hpp).
#include "upkeep/agent/control_socket.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace upkeep::agent {
namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// "30 s" for whole seconds, "1500 ms" otherwise.
std::string Duration(std::chrono::milliseconds wait) {
  if (wait.count() % 1000 == 0) return std::to_string(wait.count() / 1000) + " s";
  return std::to_string(wait.count()) + " ms";
}

}  // namespace

Expected<std::string> AskControlSocket(const std::filesystem::path& socket_path, const std::string& request,
                                      std::chrono::milliseconds wait, std::size_t max_bytes) {
  const std::string where = socket_path.string();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (where.size() >= sizeof(addr.sun_path)) return Error(Errc::kInvalidArgument, where + ": path too long for a unix socket");
  std::memcpy(addr.sun_path, where.c_str(), where.size() + 1);
  // Non-blocking: a daemon that accepts but never answers cannot hold the caller past `wait`.
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return Error(Errc::kIo, where + ": socket: " + std::strerror(errno));
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int e = errno;
    if (e == ENOENT || e == ECONNREFUSED) return Error(Errc::kNotFound, where + ": no relay listens here");
    // A full backlog: a unix socket's connect does not complete later, so try again until the deadline.
    if (e == EAGAIN && std::chrono::steady_clock::now() < deadline) {
      ::poll(nullptr, 0, 10);
      continue;
    }
    if (e == EAGAIN) return Error(Errc::kIo, where + ": no answer within " + Duration(wait));
    return Error(Errc::kIo, where + ": " + std::strerror(e));
  }
  const std::string line = request + "\n";
  if (::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    return Error(Errc::kIo, where + ": send: " + std::strerror(errno));
  }
  std::string answer;
  char buf[65536];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Error(Errc::kIo, where + ": no answer within " + Duration(wait));
    pollfd p{fd.get(), POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r <= 0) continue;  // EINTR or the deadline: checked above
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return Error(Errc::kIo, where + ": read: " + std::strerror(errno));
    if (n == 0) break;
    if (answer.size() + static_cast<std::size_t>(n) > max_bytes) {
      return Error(Errc::kLimit, where + ": the answer is over " + std::to_string(max_bytes) + " bytes");
    }
    answer.append(buf, static_cast<std::size_t>(n));
  }
  if (answer.rfind("error: ", 0) == 0) return Error(Errc::kInvalidArgument, where + ": " + answer.substr(7));
  return answer;
}

}  // namespace upkeep::agent
