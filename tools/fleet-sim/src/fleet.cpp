#include "upkeep/fleet_sim/fleet.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <thread>

#include "upkeep/common/hash.hpp"
#include "upkeep/trust/request_signing.hpp"

namespace upkeep::fleet_sim {
namespace {

// Work is done in blocks so output is written in index order while at most one block of
// results is held in memory, whatever the fleet size.
constexpr std::uint64_t kBlock = 8192;

// Runs fn(i) for i in [begin, end) on up to `threads` threads; returns the first error.
template <typename F>
Status ParallelFor(std::uint64_t begin, std::uint64_t end, unsigned threads, F&& fn) {
  threads = std::clamp<unsigned>(threads, 1, 64);
  std::vector<std::optional<Error>> errors(threads);
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (std::uint64_t i = begin + t; i < end; i += threads) {
        Status s = fn(i);
        if (!s.ok()) {
          errors[t] = s.error();
          return;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors) {
    if (e) return *e;
  }
  return OkStatus();
}

// COPY text format: backslash, tab, newline and CR are escaped.
std::string CopyEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      default: out += c;
    }
  }
  return out;
}

// A file written under a temporary name and renamed into place when complete, so a half-written
// seed file is never mistaken for a finished one.
class OutFile {
 public:
  explicit OutFile(std::filesystem::path path) : path_(std::move(path)), tmp_(path_.string() + ".part") {
    out_.open(tmp_, std::ios::binary | std::ios::trunc);
  }
  ~OutFile() {
    if (!done_) {
      out_.close();
      std::error_code ec;
      std::filesystem::remove(tmp_, ec);
    }
  }
  Status Check() const {
    if (!out_) return Error(Errc::kIo, "cannot write " + tmp_.string());
    return OkStatus();
  }
  std::ofstream& stream() { return out_; }
  Status Finish() {
    out_.close();
    if (!out_) return Error(Errc::kIo, "cannot write " + tmp_.string());
    std::error_code ec;
    std::filesystem::rename(tmp_, path_, ec);
    if (ec) return Error(Errc::kIo, "rename " + tmp_.string() + ": " + ec.message());
    done_ = true;
    return OkStatus();
  }

 private:
  std::filesystem::path path_, tmp_;
  std::ofstream out_;
  bool done_ = false;
};

}  // namespace

Bytes FleetSeed(std::uint64_t index) {
  std::string input = "fleet-sim";
  for (int shift = 56; shift >= 0; shift -= 8) input += static_cast<char>((index >> shift) & 0xff);
  return Sha256(input);
}

Expected<trust::ApplianceIdentity> FleetIdentity(std::uint64_t index) {
  Bytes seed = FleetSeed(index);
  auto id = trust::ApplianceIdentity::FromSeed(seed);
  std::fill(seed.begin(), seed.end(), 0);
  return id;
}

Expected<std::vector<trust::ApplianceIdentity>> FleetIdentities(std::uint64_t count, unsigned threads) {
  if (count > kMaxLoadedIdentities) {
    return Error(Errc::kLimit, "at most " + std::to_string(kMaxLoadedIdentities) + " identities are kept in memory");
  }
  std::vector<std::optional<trust::ApplianceIdentity>> slots(count);
  UPK_TRY(ParallelFor(0, count, threads, [&](std::uint64_t i) -> Status {
    UPK_TRY_ASSIGN(auto id, FleetIdentity(i));
    slots[i].emplace(std::move(id));
    return OkStatus();
  }));
  std::vector<trust::ApplianceIdentity> out;
  out.reserve(count);
  for (auto& s : slots) out.push_back(std::move(*s));
  return out;
}

Expected<trust::InstalledSet> ParseInstalled(const std::vector<std::string>& items) {
  trust::InstalledSet set;
  for (const auto& item : items) {
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Error(Errc::kInvalidArgument, "--installed '" + item + "': expected NAME=VERSION, e.g. base=1.0.0");
    }
    std::string name = item.substr(0, eq);
    auto version = packages::Version::Parse(item.substr(eq + 1));
    if (!version.ok()) return version.error().Wrap("--installed '" + item + "'");
    if (!set.emplace(name, *version).second) {
      return Error(Errc::kInvalidArgument, "--installed: '" + name + "' given twice");
    }
  }
  return set;
}

std::string CheckinBody(const trust::InstalledSet& installed, std::string_view agent_version, SysTime now) {
  Json inst = Json::object();
  for (const auto& [name, version] : installed) inst[name] = version.ToString();
  return Json{{"installed", inst}, {"agent_version", agent_version}, {"time", FormatTimestamp(now)}}.dump();
}

std::string EventBody(std::string_view event_id, std::string_view type, std::string_view name,
                      std::string_view version, SysTime at) {
  Json ev = {{"id", event_id}, {"type", type}, {"name", name}, {"version", version}, {"at", FormatTimestamp(at)}};
  return Json{{"events", Json::array({ev})}}.dump();
}

Expected<SignedHeaders> SignAppliance(const trust::ApplianceIdentity& identity, std::string_view method,
                                      std::string_view path_and_query, std::string_view body, const Clock& clock,
                                      Random& random) {
  trust::RequestToSign req{method, path_and_query, body};
  UPK_TRY_ASSIGN(trust::RequestSignature sig, trust::SignRequest(identity, req, clock, random));
  SignedHeaders out;
  out.headers = sig.Headers();
  out.headers.emplace_back("Content-Type", "application/json");
  return out;
}

std::string FleetLicenceKey(std::uint64_t index) {
  static constexpr std::string_view kAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  std::string input = "fleet-sim licence";
  for (int shift = 56; shift >= 0; shift -= 8) input += static_cast<char>((index >> shift) & 0xff);
  Bytes raw = Sha256(input);
  std::string key;
  for (std::size_t i = 0; i < 20; ++i) {
    if (i > 0 && i % 5 == 0) key += '-';
    key += kAlphabet[raw[i] & 31u];
  }
  return key;
}

Status WriteSeedSql(const SeedSqlOptions& options, const std::filesystem::path& dir) {
  if (options.count == 0 || options.count > kMaxFleet) {
    return Error(Errc::kInvalidArgument, "--count must be 1.." + std::to_string(kMaxFleet));
  }
  if (options.customers == 0) return Error(Errc::kInvalidArgument, "--customers must be at least 1");
  UPK_TRY(ParseTimestamp(options.enrolled_at));
  UPK_TRY(ParseTimestamp(options.maintenance_end));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Error(Errc::kIo, "cannot create " + dir.string() + ": " + ec.message());
  const auto abs = std::filesystem::absolute(dir, ec);
  if (ec) return Error(Errc::kIo, "cannot resolve " + dir.string() + ": " + ec.message());

  OutFile licences(abs / "keyserver-licences.copy"), ks_appl(abs / "keyserver-appliances.copy"),
      up_appl(abs / "updater-appliances.copy");
  UPK_TRY(licences.Check());
  UPK_TRY(ks_appl.Check());
  UPK_TRY(up_appl.Check());

  const std::string& t0 = options.enrolled_at;
  const std::string& mend = options.maintenance_end;
  std::vector<std::string> ids(kBlock), keys(kBlock);
  for (std::uint64_t begin = 0; begin < options.count; begin += kBlock) {
    const std::uint64_t end = std::min(options.count, begin + kBlock);
    UPK_TRY(ParallelFor(begin, end, options.threads, [&](std::uint64_t i) -> Status {
      UPK_TRY_ASSIGN(auto id, FleetIdentity(i));
      ids[i - begin] = id.appliance_id();
      UPK_TRY_ASSIGN(keys[i - begin], CanonicalJson(id.public_key().signing_key().ToJson()));
      return OkStatus();
    }));
    for (std::uint64_t i = begin; i < end; ++i) {
      const std::string& id = ids[i - begin];
      const std::string key = CopyEscape(keys[i - begin]);
      const std::string lic = FleetLicenceKey(i);
      const std::string customer = "fleet-sim-customer-" + std::to_string(i % options.customers);
      // licences (licence_key, customer, maintenance_end, features, created_at, appliance_id, bound_at)
      licences.stream() << lic << '\t' << customer << '\t' << mend << "\t[]\t" << t0 << '\t' << id << '\t' << t0 << '\n';
      // keyserver appliances (appliance_id, public_key, customer, licence_key, status, enrolled_at)
      ks_appl.stream() << id << '\t' << key << '\t' << customer << '\t' << lic << "\tactive\t" << t0 << '\n';
      // updater appliances (appliance_id, public_key, customer, enrolled_at, maintenance_end, first_seen)
      up_appl.stream() << id << '\t' << key << '\t' << customer << '\t' << t0 << '\t' << mend << '\t' << t0 << '\n';
    }
  }
  UPK_TRY(licences.Finish());
  UPK_TRY(ks_appl.Finish());
  UPK_TRY(up_appl.Finish());

  // psql scripts: \copy reads the files client-side, so the database server needs no access to
  // DIR. Each script is one transaction: a failed load leaves the tables as they were.
  auto quote = [](const std::filesystem::path& p) {
    std::string s = "'";
    for (char c : p.string()) s += (c == '\'') ? std::string("''") : std::string(1, c);
    return s + "'";
  };
  OutFile ks_sql(abs / "keyserver.sql"), up_sql(abs / "updater.sql");
  ks_sql.stream() << "\\set ON_ERROR_STOP on\nBEGIN;\n"
                  << "\\copy licences (licence_key, customer, maintenance_end, features, created_at, appliance_id, "
                     "bound_at) FROM "
                  << quote(abs / "keyserver-licences.copy") << "\n"
                  << "\\copy appliances (appliance_id, public_key, customer, licence_key, status, enrolled_at) FROM "
                  << quote(abs / "keyserver-appliances.copy") << "\nCOMMIT;\nANALYZE licences;\nANALYZE appliances;\n";
  up_sql.stream() << "\\set ON_ERROR_STOP on\nBEGIN;\n"
                  << "\\copy appliances (appliance_id, public_key, customer, enrolled_at, maintenance_end, first_seen) "
                     "FROM "
                  << quote(abs / "updater-appliances.copy") << "\nCOMMIT;\nANALYZE appliances;\n";
  UPK_TRY(ks_sql.Finish());
  UPK_TRY(up_sql.Finish());
  return OkStatus();
}

std::string EscapeLine(std::string_view raw) {
  std::string out;
  out.reserve(raw.size() + 32);
  for (char c : raw) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\r': out += "\\r"; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

Expected<std::string> UnescapeLine(std::string_view line) {
  std::string out;
  out.reserve(line.size());
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] != '\\') {
      out += line[i];
      continue;
    }
    if (++i == line.size()) return Error(Errc::kParse, "presigned line ends in a lone backslash");
    switch (line[i]) {
      case '\\': out += '\\'; break;
      case 'r': out += '\r'; break;
      case 'n': out += '\n'; break;
      default: return Error(Errc::kParse, std::string("presigned line has an unknown escape \\") + line[i]);
    }
  }
  return out;
}

Status WritePresigned(const PresignOptions& options, const std::filesystem::path& out, const Clock& clock) {
  if (options.appliances == 0 || options.appliances > kMaxFleet) {
    return Error(Errc::kInvalidArgument, "--count-appliances must be 1.." + std::to_string(kMaxFleet));
  }
  if (options.requests == 0 || options.requests > kMaxPresigned) {
    return Error(Errc::kInvalidArgument, "--requests must be 1.." + std::to_string(kMaxPresigned));
  }
  if (options.host_header.empty()) return Error(Errc::kInvalidArgument, "--server-host is required");
  OutFile file(out);
  UPK_TRY(file.Check());
  const std::string path = options.path_prefix + kCheckinPath;
  std::vector<std::string> lines(kBlock);
  for (std::uint64_t begin = 0; begin < options.requests; begin += kBlock) {
    const std::uint64_t end = std::min(options.requests, begin + kBlock);
    UPK_TRY(ParallelFor(begin, end, options.threads, [&](std::uint64_t j) -> Status {
      UPK_TRY_ASSIGN(auto id, FleetIdentity(options.first_index + j % options.appliances));
      const SysTime now = clock.Now();
      const std::string body = CheckinBody(options.installed, options.agent_version, now);
      UPK_TRY_ASSIGN(SignedHeaders h, SignAppliance(id, "POST", path, body, clock, SystemRandom::Instance()));
      std::string raw = "POST " + path + " HTTP/1.1\r\nHost: " + options.host_header + "\r\n";
      for (const auto& [k, v] : h.headers) raw += k + ": " + v + "\r\n";
      raw += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
      lines[j - begin] = EscapeLine(raw);
      return OkStatus();
    }));
    for (std::uint64_t j = begin; j < end; ++j) file.stream() << lines[j - begin] << '\n';
  }
  return file.Finish();
}

}  // namespace upkeep::fleet_sim
