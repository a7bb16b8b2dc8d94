// HttpClient: the agent's one seam in front of HTTP(S). Everything the agent sends to the updater
// (check-in, events, blobs) goes through it, so tests can put a fake or a loopback server behind it.
//
// Contract: Send() performs one request on a fresh connection ("Connection: close") and returns
// the status, headers and body, or streams the body to a BodySink. Every body is bounded
// (HttpRequest::max_body_bytes, else HttpClientOptions::max_body_bytes: kLimit beyond, the
// connection is closed, nothing past the cap is read) and every wait is bounded
// (HttpClientOptions::timeout of no progress: connect, each send, each receive -> kIo).
// A body shorter than its Content-Length or a broken chunked encoding -> kIo ("connection closed
// after N of M body bytes"). Transport failures are kIo; an answer with any status is a value.
// Implementations are safe to call from several threads at once (no shared connection state).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "upkeep/common/error.hpp"

namespace upkeep::agent {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method = "GET";  // upper-case token
  std::string url;             // http:// or https:// URL; "[::1]" for IPv6 literals
  HeaderList headers;          // extra headers (Host, Content-Length, Connection are set by the client)
  std::string body;
  std::uint64_t max_body_bytes = 0;  // 0: the client's default
};

struct HttpResponse {
  int status = 0;
  HeaderList headers;  // as received, names case preserved
  std::string body;    // empty when a sink consumed a 2xx body

  // First value of header `name` (ASCII case-insensitive), nullopt when absent.
  std::optional<std::string> Header(std::string_view name) const;
};

// Receives a 2xx body chunk by chunk (bodies of other statuses are read into HttpResponse::body,
// bounded by the same cap). `head` (optional) sees status and headers before the first byte.
// An error from either callback aborts the transfer, closes the connection and is returned by Send.
struct BodySink {
  std::function<Status(const HttpResponse& head)> head;
  std::function<Status(std::string_view chunk)> data;
};

class HttpClient {
 public:
  virtual ~HttpClient() = default;
  virtual Expected<HttpResponse> Send(const HttpRequest& request, const BodySink* sink = nullptr) = 0;
};

struct HttpClientOptions {
  std::chrono::milliseconds timeout{30000};       // no progress for this long -> kIo
  std::uint64_t max_body_bytes = 4 * 1024 * 1024;  // default body cap
  std::size_t max_head_bytes = 64 * 1024;          // status line + headers
  std::filesystem::path ca_file;  // PEM; when set, the ONLY trust anchors (private CA, self-signed)
  std::string user_agent = "upkeep-agent";
};

// The production client: plain sockets + OpenSSL (TLS 1.2+, certificate chain and host name or IP
// verified, SNI). kInvalidArgument when ca_file can't be loaded. Ignores SIGPIPE process-wide
// (writes to a peer that closed must be errors, not a signal).
Expected<std::unique_ptr<HttpClient>> MakeHttpClient(HttpClientOptions options = {});

}  // namespace upkeep::agent
