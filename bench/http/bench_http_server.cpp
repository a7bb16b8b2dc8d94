// The benchmark peer of nginx in bench/http/run.sh:
//   GET /small            the 1 KiB body from memory (what nginx serves from a 1 KiB file)
//   GET /checkin?id=...   a check-in-like handler: parses a JSON document, answers 1 KiB JSON
//   GET /files/NAME       DIR/NAME through the file-body path (sendfile, Range)
// usage: bench_http_server PORT DIR [IO_THREADS]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "upkeep/net/server.hpp"

using namespace upkeep::net;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s PORT DIR [IO_THREADS]\n", argv[0]);
    return 2;
  }
  ServerOptions options;
  options.endpoints = {Endpoint{"127.0.0.1", static_cast<std::uint16_t>(std::atoi(argv[1])), false}};
  options.io_threads = argc > 3 ? static_cast<unsigned>(std::atoi(argv[3])) : 0;
  std::string dir = argv[2];
  Server server(options);

  std::string small(1024, 'x');
  (void)server.Handle(Method::kGet, "/small", [&small](const Request&) {
    return Response::Text(200, small, "application/octet-stream");
  });
  (void)server.Handle(Method::kGet, "/checkin", [](const Request& req) {
    static const std::string kDoc =
        R"({"appliance":"a-123","installed":[{"name":"base","version":"1.2.3"},{"name":"app","version":"4.5.6"}]})";
    auto doc = upkeep::ParseJson(kDoc);
    if (!doc.ok()) return Response::FromError(doc.error());
    upkeep::Json answer = {{"appliance", req.QueryParam("id").value_or("unknown")},
                           {"installed", (*doc)["installed"]},
                           {"next_check_in_seconds", 3600},
                           {"padding", std::string(820, 'p')}};
    return Response::Json(200, answer);
  });
  (void)server.Handle(Method::kGet, "/files/*", [&dir](const Request& req) {
    auto file = OpenFile::Open(dir + "/" + std::string(req.path_suffix()));
    if (!file.ok()) return Response::FromError(file.error());
    return Response::FromFile(std::move(file).value(), "application/octet-stream");
  });
  if (auto st = server.Start(); !st.ok()) {
    std::fprintf(stderr, "bench_http_server: %s\n", st.error().message().c_str());
    return 1;
  }
  std::printf("bench_http_server on 127.0.0.1:%u\n", server.ports()[0]);
  std::fflush(stdout);
  server.StopOnSignals(std::chrono::seconds(2));
  server.Wait();
  return 0;
}
