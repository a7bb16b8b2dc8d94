// The byte-source seam: where a PackageReader gets its bytes when they do not come from a plain
// file or buffer (an encrypted blob decrypted on the fly, see trust/payload.hpp).
//
// A ByteSource is a forward-only stream, used by one thread at a time, owned by whoever reads it
// (PackageReader::OpenSource takes ownership). Read() fills at most buf.size() bytes and returns
// how many; 0 means the end and is returned again on every later call. A source that checks
// something when it reaches its end (a length, a digest) reports that as an error instead of
// the final 0, so a consumer that reads to the end never accepts bytes the source rejects. An
// error is final: the same Error comes back on every later call. Reads never throw.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>

#include "upkeep/common/error.hpp"

namespace upkeep::packages {

class ByteSource {  // a forward-only stream of bytes; single-threaded
 public:
  virtual ~ByteSource() = default;
  // Reads up to buf.size() bytes; 0 means the end. An error is final (returned again on every call).
  virtual Expected<std::size_t> Read(std::span<std::uint8_t> buf) = 0;
  // Bytes delivered so far.
  virtual std::uint64_t position() const = 0;
};

// A regular file read front to back. Open errors: kNotFound, kIo, kInvalidArgument (not a
// regular file); read errors are kIo naming the file.
Expected<std::unique_ptr<ByteSource>> OpenFileSource(const std::filesystem::path& file);

}  // namespace upkeep::packages
