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
//
// Request bodies come from memory (HttpRequest::body) or are streamed from a file
// (HttpRequest::body_file: read in chunks of at most 1 MiB, so memory stays flat for any size,
// paced by an optional bandwidth limit, with per-chunk progress). A file that can't be opened ->
// kNotFound/kIo, a file that shrinks or grows while it is sent -> kIo, both naming the file. When
// sending the body fails because the peer answered early and closed (401, 409, 413 ...), that
// answer (status >= 300 only) is returned if it can still be read; otherwise the send error.
#pragma once

#include <atomic>
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
  // When set, the request body is this file, streamed (`body` must then be empty, else
  // kInvalidArgument); its size when Send opens it is sent as Content-Length. Not a regular file
  // -> kInvalidArgument.
  std::filesystem::path body_file;
  // Pacing of a body_file upload: bytes per second, 0 = unlimited. When `live_bandwidth_limit` is
  // set it is read before every chunk instead (as DownloadRequest does). Responses are not paced
  // here (a BodySink paces those).
  std::uint64_t bandwidth_limit_bytes_per_second = 0;
  const std::atomic<std::uint64_t>* live_bandwidth_limit = nullptr;
  // (bytes of body_file sent, its size) after each chunk; may be empty. An error aborts the
  // request (the connection is closed) and is returned by Send.
  std::function<Status(std::uint64_t sent, std::uint64_t total)> upload_progress;
  // How long to wait for the response once the whole body is sent (a peer that verifies a large
  // upload before answering needs minutes); 0: HttpClientOptions::timeout.
  std::chrono::milliseconds response_timeout{0};
  std::uint64_t max_body_bytes = 0;  // response body cap; 0: the client's default
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
