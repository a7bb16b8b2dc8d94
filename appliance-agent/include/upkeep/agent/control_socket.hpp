// The client side of the daemon's local control socket (the relay's STATE/relay.sock; the
// protocol of relay_host.hpp: one request line, the answer, then the daemon closes). Used by
// `appliance-agent clients` (AskRelay) and by the updates page's clients panel, each with its own
// deadline and answer bound. Blocking, no shared state: safe from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <string>

#include "upkeep/common/error.hpp"

namespace upkeep::agent {

// Sends `request` and reads the answer until the daemon closes, within `wait` and `max_bytes`.
// Errors (each naming the socket's path): kNotFound when nothing listens there ("no relay listens
// here"), kIo for a socket failure or no complete answer within `wait`, kLimit for an answer over
// `max_bytes`, kInvalidArgument for a path too long for a unix socket or an answer "error: WHY"
// (the message is WHY).
Expected<std::string> AskControlSocket(const std::filesystem::path& socket, const std::string& request,
                                      std::chrono::milliseconds wait, std::size_t max_bytes);

}  // namespace upkeep::agent
