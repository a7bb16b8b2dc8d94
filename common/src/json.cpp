#include "upkeep/common/json.hpp"

#include <set>

namespace upkeep {
namespace {

struct DepthExceeded {};

void AppendCanonicalString(std::string& out, const std::string& s) {
  out.push_back('"');
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
}

bool AppendCanonical(std::string& out, const Json& v, int depth) {
  if (depth > kMaxJsonDepth) return false;
  switch (v.type()) {
    case Json::value_t::null: out += "null"; return true;
    case Json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; return true;
    case Json::value_t::number_integer: out += std::to_string(v.get<std::int64_t>()); return true;
    case Json::value_t::number_unsigned: out += std::to_string(v.get<std::uint64_t>()); return true;
    case Json::value_t::string: AppendCanonicalString(out, v.get_ref<const std::string&>()); return true;
    case Json::value_t::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& e : v) {
        if (!first) out.push_back(',');
        first = false;
        if (!AppendCanonical(out, e, depth + 1)) return false;
      }
      out.push_back(']');
      return true;
    }
    case Json::value_t::object: {
      // nlohmann::json objects are std::map-backed, so iteration is already in byte order.
      out.push_back('{');
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out.push_back(',');
        first = false;
        AppendCanonicalString(out, it.key());
        out.push_back(':');
        if (!AppendCanonical(out, it.value(), depth + 1)) return false;
      }
      out.push_back('}');
      return true;
    }
    default:
      return false;  // floats, binary, discarded
  }
}

}  // namespace

Expected<Json> ParseJson(std::string_view text) {
  // Tracks the keys of each open object so duplicates are refused.
  std::vector<std::set<std::string>> keys;
  bool duplicate = false;
  std::string dup_key;
  auto cb = [&](int depth, Json::parse_event_t event, Json& parsed) -> bool {
    if (depth > kMaxJsonDepth) throw DepthExceeded{};
    switch (event) {
      case Json::parse_event_t::object_start: keys.emplace_back(); break;
      case Json::parse_event_t::object_end: if (!keys.empty()) keys.pop_back(); break;
      case Json::parse_event_t::key:
        if (!keys.empty() && !keys.back().insert(parsed.get<std::string>()).second && !duplicate) {
          duplicate = true;
          dup_key = parsed.get<std::string>();
        }
        break;
      default: break;
    }
    return true;
  };
  try {
    Json j = Json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
    if (duplicate) return Error(Errc::kParse, "duplicate JSON key '" + dup_key + "'");
    return j;
  } catch (const DepthExceeded&) {
    return Error(Errc::kParse, "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  } catch (const Json::exception& e) {
    std::string msg = e.what();
    // nlohmann prefixes "[json.exception.parse_error.101] "; keep only the readable part.
    if (auto pos = msg.find("] "); pos != std::string::npos) msg = msg.substr(pos + 2);
    return Error(Errc::kParse, "invalid JSON: " + msg);
  }
}

Expected<std::string> CanonicalJson(const Json& value) {
  std::string out;
  if (!AppendCanonical(out, value, 0)) {
    return Error(Errc::kInvalidArgument, "value cannot be written as canonical JSON (floats or too deep)");
  }
  return out;
}

namespace {
Error FieldError(const char* key, const char* want) {
  return Error(Errc::kParse, std::string("field '") + key + "': missing or not " + want);
}
}  // namespace

Expected<std::string> GetString(const Json& obj, const char* key) {
  if (!obj.is_object()) return Error(Errc::kParse, "expected a JSON object");
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return FieldError(key, "a string");
  return it->get<std::string>();
}

Expected<std::int64_t> GetInt(const Json& obj, const char* key) {
  if (!obj.is_object()) return Error(Errc::kParse, "expected a JSON object");
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_number_integer()) return FieldError(key, "an integer");
  if (it->is_number_unsigned() && it->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
    return FieldError(key, "an integer in range");
  }
  return it->get<std::int64_t>();
}

Expected<bool> GetBool(const Json& obj, const char* key) {
  if (!obj.is_object()) return Error(Errc::kParse, "expected a JSON object");
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_boolean()) return FieldError(key, "a boolean");
  return it->get<bool>();
}

Expected<const Json*> GetObject(const Json& obj, const char* key) {
  if (!obj.is_object()) return Error(Errc::kParse, "expected a JSON object");
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_object()) return FieldError(key, "an object");
  return &*it;
}

Expected<const Json*> GetArray(const Json& obj, const char* key) {
  if (!obj.is_object()) return Error(Errc::kParse, "expected a JSON object");
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_array()) return FieldError(key, "an array");
  return &*it;
}

}  // namespace upkeep
