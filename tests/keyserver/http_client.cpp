#include "http_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace upkeep::keyserver::test {

std::string HttpReply::ErrorCode() const {
  if (json.is_object() && json.contains("error") && json["error"].is_object() && json["error"].contains("code") &&
      json["error"]["code"].is_string()) {
    return json["error"]["code"].get<std::string>();
  }
  return "";
}

HttpReply Call(std::uint16_t port, std::string_view method, std::string_view path, std::string_view body,
               std::optional<std::string> bearer) {
  HttpReply reply;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return reply;
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return reply;
  }
  std::string request = std::string(method) + " " + std::string(path) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                        "Connection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  if (bearer) request += "Authorization: Bearer " + *bearer + "\r\n";
  if (!body.empty()) request += "Content-Type: application/json\r\n";
  request += "\r\n";
  request += body;
  std::size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer (413) and stop reading early; read what it said
    sent += static_cast<std::size_t>(n);
  }
  std::string data;
  char buf[16384];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const auto end = data.find("\r\n\r\n");
  if (end == std::string::npos || data.size() < 12) return reply;
  reply.head = data.substr(0, end);
  reply.body = data.substr(end + 4);
  reply.status = std::stoi(data.substr(9, 3));
  auto json = ParseJson(reply.body);
  if (json.ok()) reply.json = *json;
  return reply;
}

}  // namespace upkeep::keyserver::test
