// JSON in and out, through nlohmann::json, with the limits hostile input needs (size and
// nesting depth) and the OLPC canonical form that signatures are computed over.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "upkeep/common/error.hpp"

namespace upkeep {

using Json = nlohmann::json;

constexpr int kMaxJsonDepth = 64;

// Parses text; refuses malformed JSON, nesting deeper than kMaxJsonDepth, and duplicate keys
// (which would let two readers of one signed document disagree on its content).
Expected<Json> ParseJson(std::string_view text);

// OLPC canonical JSON as TUF uses it: object keys sorted by byte value, no insignificant
// whitespace, strings escaping only '"' and '\', integers only. Floats are refused.
Expected<std::string> CanonicalJson(const Json& value);

// Typed field access with errors that name the field.
Expected<std::string> GetString(const Json& obj, const char* key);
Expected<std::int64_t> GetInt(const Json& obj, const char* key);
Expected<bool> GetBool(const Json& obj, const char* key);
Expected<const Json*> GetObject(const Json& obj, const char* key);
Expected<const Json*> GetArray(const Json& obj, const char* key);

}  // namespace upkeep
