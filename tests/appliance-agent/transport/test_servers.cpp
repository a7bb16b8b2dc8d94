#include "test_servers.hpp"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <cctype>
#include <cstring>

namespace upkeep::agent::test {

std::string RawRequest::Header(const std::string& name) const {
  std::size_t pos = head.find("\r\n");
  while (pos != std::string::npos && pos + 2 < head.size()) {
    const std::size_t eol = head.find("\r\n", pos + 2);
    const std::string line = head.substr(pos + 2, eol - pos - 2);
    const std::size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string k = line.substr(0, colon);
      for (auto& c : k) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string want = name;
      for (auto& c : want) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (k == want) {
        std::string v = line.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.erase(0, 1);
        return v;
      }
    }
    pos = eol;
  }
  return "";
}

RawServer::RawServer(std::function<RawAnswer(const RawRequest&)> handler) : handler_(std::move(handler)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::listen(listen_fd_, 16);
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { Loop(); });
}

RawServer::~RawServer() {
  stop_ = true;
  thread_.join();
  ::close(listen_fd_);
}

std::vector<RawRequest> RawServer::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

void RawServer::Loop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) != 1) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::string data;
    char buf[4096];
    RawRequest req;
    bool ok = false;
    for (;;) {
      pollfd q{fd, POLLIN, 0};
      if (::poll(&q, 1, 2000) != 1) break;
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      data.append(buf, static_cast<std::size_t>(n));
      const std::size_t end = data.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      req.head = data.substr(0, end);
      const std::string cl = req.Header("Content-Length");
      const std::size_t want = cl.empty() ? 0 : std::stoul(cl);
      if (data.size() - end - 4 < want) continue;
      req.body = data.substr(end + 4, want);
      ok = true;
      break;
    }
    if (ok) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        requests_.push_back(req);
      }
      const RawAnswer answer = handler_(req);
      std::size_t off = 0;
      while (off < answer.bytes.size()) {
        const ssize_t n = ::send(fd, answer.bytes.data() + off, answer.bytes.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<std::size_t>(n);
      }
      if (answer.stall_after.count() > 0) std::this_thread::sleep_for(answer.stall_after);
    }
    ::close(fd);
  }
}

}  // namespace upkeep::agent::test
