#include "config/loader.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <boost/locale/utf.hpp>
#include <boost/url.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <set>
#include <sstream>
#include <utility>

#include "config/duration.hpp"

namespace va::config {

namespace {

using Env = std::map<std::string, std::string>;

constexpr std::string_view kEnvPrefix = "VLLM_AUTOSCALER_";

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) {
      out += sep;
    }
    out += parts[i];
  }
  return out;
}

std::string in_quotes(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string_view trim(std::string_view s) {
  const auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  while (!s.empty() && space(s.front())) {
    s.remove_prefix(1);
  }
  while (!s.empty() && space(s.back())) {
    s.remove_suffix(1);
  }
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string child(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

std::string element(const std::string& parent, std::size_t i) {
  return parent + "[" + std::to_string(i) + "]";
}

// Every problem found, in the order found. A path reported once is not reported again, so that a
// value that failed to decode is not also reported as missing or out of range by validation.
class Problems {
 public:
  void add(const std::string& path, std::string_view message) {
    reported_.insert(path);
    list_.push_back(path + ": " + std::string(message));
  }
  // Validation: skipped when `path` already has a problem. `shown` is the path as printed, which
  // names the flag or variable the value came from.
  void check(const std::string& path, const std::string& shown, std::string_view message) {
    if (!reported_.contains(path)) {
      reported_.insert(path);
      list_.push_back(shown + ": " + std::string(message));
    }
  }
  bool empty() const { return list_.empty(); }
  const std::vector<std::string>& list() const { return list_; }

 private:
  std::set<std::string> reported_;
  std::vector<std::string> list_;
};

bool valid_variable_name(std::string_view name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name.front())) != 0) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
  });
}

// The offset of the first byte that is not well-formed UTF-8 (no overlong forms, no surrogates,
// nothing above U+10FFFF: Boost.Locale's header-only decoder checks all three), or npos. A
// config's strings must be UTF-8: yaml-cpp reads other bytes as they are but writes each as
// U+FFFD, so --print-config would show another value.
std::size_t invalid_utf8(std::string_view s) {
  namespace utf = boost::locale::utf;
  for (auto p = s.begin(); p != s.end();) {
    const auto at = p;
    const utf::code_point c = utf::utf_traits<char>::decode(p, s.end());
    if (c == utf::illegal || c == utf::incomplete) {
      return static_cast<std::size_t>(at - s.begin());
    }
  }
  return std::string_view::npos;
}

// Expands ${VAR} and ${VAR:-default} (default used when VAR is unset or empty, as in the shell);
// "$${" is a literal "${". Reports every unset variable in `in`, not just the first.
std::optional<std::string> expand(std::string_view in, const std::string& path, const Env& env,
                                  Problems& problems) {
  std::string out;
  bool ok = true;
  std::size_t i = 0;
  while (i < in.size()) {
    if (in.compare(i, 3, "$${") == 0) {
      out += "${";
      i += 3;
      continue;
    }
    if (in.compare(i, 2, "${") != 0) {
      out += in[i++];
      continue;
    }
    const std::size_t close = in.find('}', i + 2);
    if (close == std::string_view::npos) {
      problems.add(path, "unterminated \"${\" (write \"$${\" for a literal \"${\")");
      return std::nullopt;
    }
    const std::string_view inner = in.substr(i + 2, close - i - 2);
    const std::size_t sep = inner.find(":-");
    const std::string_view name = inner.substr(0, sep);
    if (!valid_variable_name(name)) {
      problems.add(path, "bad variable reference " + in_quotes(in.substr(i, close - i + 1)));
      return std::nullopt;
    }
    const auto it = env.find(std::string(name));
    if (it != env.end() && invalid_utf8(it->second) != std::string_view::npos) {
      problems.add(path, "environment variable " + std::string(name) + " is not valid UTF-8");
      ok = false;
    } else if (sep != std::string_view::npos) {
      out +=
          (it == env.end() || it->second.empty()) ? std::string(inner.substr(sep + 2)) : it->second;
    } else if (it != env.end()) {
      out += it->second;
    } else {
      problems.add(path, "environment variable " + std::string(name) + " is not set");
      ok = false;
    }
    i = close + 1;
  }
  if (!ok) {
    return std::nullopt;
  }
  return out;
}

// Reads YAML nodes into the structs, recording a problem (with its key path) for each node of the
// wrong shape; the target keeps its default then.
class Decoder {
 public:
  Decoder(const Env& env, Problems& problems) : env_(env), problems_(problems) {}

  // Calls `fn(key, value, path)` for each known key of the map at `node`; an unknown or repeated
  // key is a problem. A null node (a key with nothing under it) is an empty map.
  void map(
      const YAML::Node& node, const std::string& path,
      std::initializer_list<std::string_view> known,
      const std::function<void(const std::string&, const YAML::Node&, const std::string&)>& fn) {
    if (node.IsNull()) {
      return;
    }
    if (!node.IsMap()) {
      problems_.add(path, "expected a map");
      return;
    }
    std::set<std::string> seen;
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) {
        problems_.add(path.empty() ? "config" : path, "keys must be strings");
        continue;
      }
      const std::string key = kv.first.Scalar();
      const std::string key_path = child(path, key);
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        problems_.add(key_path, "unknown key");
      } else if (!seen.insert(key).second) {
        problems_.add(key_path, "repeated key");
      } else {
        fn(key, kv.second, key_path);
      }
    }
  }

  void string(const YAML::Node& node, const std::string& path, std::string& out) {
    if (auto s = scalar(node, path, "expected a string")) {
      out = std::move(*s);
    }
  }

  template <typename Int>
  void number(const YAML::Node& node, const std::string& path, Int& out) {
    if (auto s = scalar(node, path, "expected a number")) {
      if (auto error = parse_number(*s, out)) {
        problems_.add(path, *error);
      }
    }
  }

  void boolean(const YAML::Node& node, const std::string& path, bool& out) {
    auto s = scalar(node, path, "expected a bool");
    if (!s) {
      return;
    }
    if (*s == "true" || *s == "True" || *s == "TRUE") {
      out = true;
    } else if (*s == "false" || *s == "False" || *s == "FALSE") {
      out = false;
    } else {
      problems_.add(path, "expected a bool");
    }
  }

  void duration(const YAML::Node& node, const std::string& path, Duration& out) {
    auto s = scalar(node, path, "expected a duration");
    if (!s) {
      return;
    }
    if (auto d = parse_duration(*s)) {
      out = *d;
    } else {
      problems_.add(path, "bad duration " + in_quotes(*s) + " (use ms, s, m or h)");
    }
  }

  void string_list(const YAML::Node& node, const std::string& path, std::vector<std::string>& out) {
    if (node.IsNull()) {
      out.clear();
      return;
    }
    if (!node.IsSequence()) {
      problems_.add(path, "expected a list");
      return;
    }
    std::vector<std::string> values;
    for (std::size_t i = 0; i < node.size(); ++i) {
      if (auto s = scalar(node[i], element(path, i), "expected a string")) {
        values.push_back(std::move(*s));
      }
    }
    out = std::move(values);
  }

  void string_map(const YAML::Node& node, const std::string& path,
                  std::map<std::string, std::string>& out) {
    if (node.IsNull()) {
      out.clear();
      return;
    }
    if (!node.IsMap()) {
      problems_.add(path, "expected a map");
      return;
    }
    std::map<std::string, std::string> values;
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) {
        problems_.add(path, "keys must be strings");
        continue;
      }
      const std::string key = kv.first.Scalar();
      const std::string key_path = child(path, key);
      if (values.contains(key)) {
        problems_.add(key_path, "repeated key");
      } else if (auto s = scalar(kv.second, key_path, "expected a string")) {
        values.emplace(key, std::move(*s));
      }
    }
    out = std::move(values);
  }

  template <typename Int>
  static std::optional<std::string> parse_number(std::string_view s, Int& out) {
    if (std::is_unsigned_v<Int> && !s.empty() && s.front() == '-') {
      return "must not be negative";
    }
    Int value{};
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec == std::errc::result_out_of_range) {
      return "number out of range";
    }
    if (ec != std::errc{} || end != s.data() + s.size() || s.empty()) {
      return "expected a number";
    }
    out = value;
    return std::nullopt;
  }

 private:
  std::optional<std::string> scalar(const YAML::Node& node, const std::string& path,
                                    std::string_view type_problem) {
    if (!node.IsScalar()) {
      problems_.add(path, type_problem);
      return std::nullopt;
    }
    return expand(node.Scalar(), path, env_, problems_);
  }

  const Env& env_;
  Problems& problems_;
};

void decode_health(Decoder& d, const YAML::Node& node, const std::string& path, Health& h) {
  d.map(node, path, {"path", "interval", "headers"},
        [&](const std::string& key, const YAML::Node& v, const std::string& p) {
          if (key == "path") {
            d.string(v, p, h.path);
          } else if (key == "interval") {
            d.duration(v, p, h.interval);
          } else {
            d.string_map(v, p, h.headers);
          }
        });
}

void decode_scaler(Decoder& d, const YAML::Node& node, const std::string& path, Scaler& s) {
  d.map(node, path,
        {"type", "namespace", "deployment", "replicas", "kubeconfig", "command", "env",
         "stop_timeout"},
        [&](const std::string& key, const YAML::Node& v, const std::string& p) {
          if (key == "type") {
            d.string(v, p, s.type);
          } else if (key == "namespace") {
            d.string(v, p, s.namespace_);
          } else if (key == "deployment") {
            d.string(v, p, s.deployment);
          } else if (key == "replicas") {
            d.number(v, p, s.replicas);
          } else if (key == "kubeconfig") {
            d.string(v, p, s.kubeconfig);
          } else if (key == "command") {
            d.string_list(v, p, s.command);
          } else if (key == "env") {
            d.string_map(v, p, s.env);
          } else {
            d.duration(v, p, s.stop_timeout);
          }
        });
}

void decode_backend(Decoder& d, const YAML::Node& node, const std::string& path, Backend& b) {
  d.map(node, path,
        {"name", "models", "default", "upstream", "idle_timeout", "wake_timeout",
         "upstream_timeout", "max_pending", "upstream_headers", "health", "scaler"},
        [&](const std::string& key, const YAML::Node& v, const std::string& p) {
          if (key == "name") {
            d.string(v, p, b.name);
          } else if (key == "models") {
            d.string_list(v, p, b.models);
          } else if (key == "default") {
            d.boolean(v, p, b.default_);
          } else if (key == "upstream") {
            d.string(v, p, b.upstream);
          } else if (key == "idle_timeout") {
            d.duration(v, p, b.idle_timeout);
          } else if (key == "wake_timeout") {
            d.duration(v, p, b.wake_timeout);
          } else if (key == "upstream_timeout") {
            d.duration(v, p, b.upstream_timeout);
          } else if (key == "max_pending") {
            d.number(v, p, b.max_pending);
          } else if (key == "upstream_headers") {
            d.string_map(v, p, b.upstream_headers);
          } else if (key == "health") {
            decode_health(d, v, p, b.health);
          } else {
            decode_scaler(d, v, p, b.scaler);
          }
        });
}

void decode_config(Decoder& d, Problems& problems, const YAML::Node& root, Config& c) {
  d.map(root, "", {"listen", "admin_listen", "threads", "log", "auth", "limits", "backends"},
        [&](const std::string& key, const YAML::Node& v, const std::string& p) {
          if (key == "listen") {
            d.string(v, p, c.listen);
          } else if (key == "admin_listen") {
            d.string(v, p, c.admin_listen);
          } else if (key == "threads") {
            d.number(v, p, c.threads);
          } else if (key == "log") {
            d.map(v, p, {"level", "format"},
                  [&](const std::string& k, const YAML::Node& lv, const std::string& lp) {
                    d.string(lv, lp, k == "level" ? c.log.level : c.log.format);
                  });
          } else if (key == "auth") {
            d.map(v, p, {"api_keys_file", "api_keys"},
                  [&](const std::string& k, const YAML::Node& av, const std::string& ap) {
                    if (k == "api_keys_file") {
                      d.string(av, ap, c.auth.api_keys_file);
                    } else {
                      d.string_list(av, ap, c.auth.api_keys);
                    }
                  });
          } else if (key == "limits") {
            d.map(v, p,
                  {"max_header_bytes", "max_body_bytes", "max_pending_bytes", "max_connections",
                   "header_timeout", "keepalive_timeout", "send_timeout", "shutdown_timeout"},
                  [&](const std::string& k, const YAML::Node& lv, const std::string& lp) {
                    Limits& l = c.limits;
                    if (k == "max_header_bytes") {
                      d.number(lv, lp, l.max_header_bytes);
                    } else if (k == "max_body_bytes") {
                      d.number(lv, lp, l.max_body_bytes);
                    } else if (k == "max_pending_bytes") {
                      d.number(lv, lp, l.max_pending_bytes);
                    } else if (k == "max_connections") {
                      d.number(lv, lp, l.max_connections);
                    } else if (k == "header_timeout") {
                      d.duration(lv, lp, l.header_timeout);
                    } else if (k == "keepalive_timeout") {
                      d.duration(lv, lp, l.keepalive_timeout);
                    } else if (k == "send_timeout") {
                      d.duration(lv, lp, l.send_timeout);
                    } else {
                      d.duration(lv, lp, l.shutdown_timeout);
                    }
                  });
          } else if (v.IsNull()) {
            c.backends.clear();
          } else if (!v.IsSequence()) {
            problems.add(p, "expected a list");
          } else {
            c.backends.resize(v.size());
            for (std::size_t i = 0; i < v.size(); ++i) {
              decode_backend(d, v[i], element(p, i), c.backends[i]);
            }
          }
        });
}

std::optional<std::string> read_file(const std::string& path, std::string& why) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    why = "is a directory";
    return std::nullopt;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    why = std::strerror(errno);
    return std::nullopt;
  }
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) {
    why = std::strerror(errno);
    return std::nullopt;
  }
  return out.str();
}

// Reads the YAML file into `c`. False when the file cannot be read or parsed: what follows would
// only be noise about the missing settings.
bool load_file(const std::string& file, const Env& env, Problems& problems, Config& c) {
  std::string why;
  const auto text = read_file(file, why);
  if (!text) {
    problems.add("config", "cannot read " + file + ": " + why);
    return false;
  }
  if (const std::size_t bad = invalid_utf8(*text); bad != std::string_view::npos) {
    const std::string_view before(text->data(), bad);
    const std::size_t line_start = before.rfind('\n') + 1;  // 0 when there is no newline
    problems.add(file + ":" + std::to_string(std::count(before.begin(), before.end(), '\n') + 1) +
                     ":" + std::to_string(bad - line_start + 1),
                 fmt::format("not valid UTF-8 (byte 0x{:02x}); a config file must be UTF-8",
                             static_cast<unsigned char>((*text)[bad])));
    return false;
  }
  try {
    const YAML::Node root = YAML::Load(*text);
    if (!root.IsNull() && !root.IsMap()) {
      problems.add(file, "expected a map of settings at the top level");
      return false;
    }
    Decoder decoder(env, problems);
    decode_config(decoder, problems, root, c);
  } catch (const YAML::ParserException& e) {
    problems.add(
        file + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1),
        e.msg);
    return false;
  } catch (const YAML::Exception& e) {
    problems.add(file, e.what());
    return false;
  }
  return true;
}

// ---- flags and environment ----

// The settings that have a flag (--idle-timeout) and a variable (VLLM_AUTOSCALER_IDLE_TIMEOUT).
constexpr std::array<std::string_view, 13> kOverridable{
    "listen",        "admin-listen",   "threads",        "log-level",    "log-format",
    "api-key-file",  "upstream",       "model",          "idle-timeout", "wake-timeout",
    "k8s-namespace", "k8s-deployment", "process-command"};

constexpr std::array<std::string_view, 7> kBackendShorthands{
    "upstream",      "model",          "idle-timeout",   "wake-timeout",
    "k8s-namespace", "k8s-deployment", "process-command"};

std::string env_name(std::string_view flag) {
  std::string name(kEnvPrefix);
  for (char c : flag) {
    name += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return name;
}

// One overridden setting: its values (several only for --model) and where they came from, as
// shown in problems ("--listen" or "VLLM_AUTOSCALER_LISTEN").
struct Override {
  std::vector<std::string> values;
  std::string source;
  const std::string& value() const { return values.front(); }
};

using Overrides = std::map<std::string, Override, std::less<>>;

std::vector<std::string> split_list(std::string_view s) {
  std::vector<std::string> out;
  while (true) {
    const std::size_t comma = s.find(',');
    const std::string_view item = trim(s.substr(0, comma));
    if (!item.empty()) {
      out.emplace_back(item);
    }
    if (comma == std::string_view::npos) {
      return out;
    }
    s.remove_prefix(comma + 1);
  }
}

// Words separated by whitespace; double quotes group words ("" is an empty word).
std::optional<std::vector<std::string>> split_command(std::string_view s) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  bool quoting = false;
  for (char c : s) {
    if (c == '"') {
      quoting = !quoting;
      in_word = true;
    } else if (!quoting && std::isspace(static_cast<unsigned char>(c)) != 0) {
      if (in_word) {
        words.push_back(std::move(word));
        word.clear();
        in_word = false;
      }
    } else {
      word += c;
      in_word = true;
    }
  }
  if (quoting) {
    return std::nullopt;
  }
  if (in_word) {
    words.push_back(std::move(word));
  }
  return words;
}

// Tracks which key paths were set by a flag or variable, so that problems name the source.
class Origins {
 public:
  void set(const std::string& path, const std::string& source) { sources_[path] = source; }
  std::string shown(const std::string& path) const {
    const auto it = sources_.find(path);
    return it == sources_.end() ? path : path + " (from " + it->second + ")";
  }

 private:
  std::map<std::string, std::string> sources_;
};

void apply_overrides(const Overrides& o, Config& c, Origins& origins, Problems& problems) {
  const auto set_string = [&](std::string_view flag, const std::string& path, std::string& out) {
    if (const auto it = o.find(flag); it != o.end()) {
      out = it->second.value();
      origins.set(path, it->second.source);
    }
  };
  set_string("listen", "listen", c.listen);
  set_string("admin-listen", "admin_listen", c.admin_listen);
  set_string("log-level", "log.level", c.log.level);
  set_string("log-format", "log.format", c.log.format);
  set_string("api-key-file", "auth.api_keys_file", c.auth.api_keys_file);
  if (const auto it = o.find("threads"); it != o.end()) {
    if (auto error = Decoder::parse_number(it->second.value(), c.threads)) {
      problems.add(it->second.source, *error);
    }
    origins.set("threads", it->second.source);
  }

  std::vector<std::string> shorthand_sources;
  for (std::string_view flag : kBackendShorthands) {
    if (const auto it = o.find(flag); it != o.end()) {
      shorthand_sources.push_back(it->second.source);
    }
  }
  if (shorthand_sources.empty()) {
    return;
  }
  if (c.backends.size() > 1) {
    problems.add("backends", "shorthand flags need exactly one backend; the config file has " +
                                 std::to_string(c.backends.size()) + " (" +
                                 join(shorthand_sources, ", ") + ")");
    return;
  }
  if (c.backends.empty()) {
    Backend& created = c.backends.emplace_back();
    created.name = "default";
    created.default_ = true;
  }
  Backend& b = c.backends.front();
  const std::string path = "backends[0]";
  set_string("upstream", path + ".upstream", b.upstream);
  if (const auto it = o.find("model"); it != o.end()) {
    b.models = it->second.values;
    origins.set(path + ".models", it->second.source);
  }
  const auto set_duration = [&](std::string_view flag, const std::string& key, Duration& out) {
    if (const auto it = o.find(flag); it != o.end()) {
      if (auto d = parse_duration(it->second.value())) {
        out = *d;
      } else {
        problems.add(it->second.source,
                     "bad duration " + in_quotes(it->second.value()) + " (use ms, s, m or h)");
      }
      origins.set(path + "." + key, it->second.source);
    }
  };
  set_duration("idle-timeout", "idle_timeout", b.idle_timeout);
  set_duration("wake-timeout", "wake_timeout", b.wake_timeout);

  // A shorthand that names a scaler replaces the file's scaler of another type whole, so that
  // `--process-command` over a kubernetes backend does not leave its deployment behind.
  const auto process = o.find("process-command");
  const auto deployment = o.find("k8s-deployment");
  if (process != o.end() && deployment != o.end()) {
    problems.add(path + ".scaler", "both " + process->second.source + " and " +
                                       deployment->second.source +
                                       " are set; a backend has one scaler");
    return;
  }
  if (process != o.end()) {
    if (b.scaler.type != "process") {
      b.scaler = Scaler();
      b.scaler.type = "process";
    }
    if (auto words = split_command(process->second.value())) {
      b.scaler.command = std::move(*words);
    } else {
      problems.add(process->second.source, "unterminated double quote");
    }
    origins.set(path + ".scaler.command", process->second.source);
    origins.set(path + ".scaler.type", process->second.source);
  }
  if (deployment != o.end()) {
    if (b.scaler.type != "kubernetes") {
      b.scaler = Scaler();
      b.scaler.type = "kubernetes";
    }
    b.scaler.deployment = deployment->second.value();
    origins.set(path + ".scaler.deployment", deployment->second.source);
    origins.set(path + ".scaler.type", deployment->second.source);
  }
  set_string("k8s-namespace", path + ".scaler.namespace", b.scaler.namespace_);
}

// ---- api keys ----

void load_keys(Auth& auth, const Origins& origins, Problems& problems) {
  auth.keys.clear();
  for (std::size_t i = 0; i < auth.api_keys.size(); ++i) {
    if (auth.api_keys[i].empty()) {
      const std::string path = element("auth.api_keys", i);
      problems.check(path, path, "empty key");
    } else {
      auth.keys.push_back(auth.api_keys[i]);
    }
  }
  if (auth.api_keys_file.empty()) {
    return;
  }
  const std::string path = "auth.api_keys_file";
  std::string why;
  const auto text = read_file(auth.api_keys_file, why);
  if (!text) {
    problems.check(path, origins.shown(path), "cannot read " + auth.api_keys_file + ": " + why);
    return;
  }
  std::size_t found = 0;
  std::istringstream lines(*text);
  for (std::string line; std::getline(lines, line);) {
    const std::string_view key = trim(line);
    if (!key.empty() && key.front() != '#') {
      auth.keys.emplace_back(key);
      ++found;
    }
  }
  if (found == 0) {
    // An empty key file must not quietly turn authentication off.
    problems.check(path, origins.shown(path), auth.api_keys_file + " contains no keys");
  }
}

// ---- validation ----

bool one_of(const std::string& value, std::initializer_list<std::string_view> allowed) {
  return std::find(allowed.begin(), allowed.end(), value) != allowed.end();
}

bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::optional<Endpoint> parse_upstream_why(std::string_view s, std::string& why) {
  // The scheme first: Boost.URL 1.81 fails an assertion on some other strings ("x:]", found by
  // fuzz/config; regression input fuzz/corpus/config/regression-url-rootless-bracket).
  if (s.starts_with("https://")) {
    why = "https upstreams are not supported yet; use http://";
    return std::nullopt;
  }
  if (!s.starts_with("http://")) {
    why = "must start with http://";
    return std::nullopt;
  }
  const auto r = boost::urls::parse_uri(s);
  if (!r) {
    why = "not a URL";
    return std::nullopt;
  }
  const boost::urls::url_view& u = *r;
  if (u.has_userinfo()) {
    why = "must not contain credentials";
    return std::nullopt;
  }
  if (u.host_type() == boost::urls::host_type::none || u.encoded_host().empty()) {
    why = "has no host";
    return std::nullopt;
  }
  if (u.host_type() == boost::urls::host_type::ipvfuture) {
    why = "unsupported host";
    return std::nullopt;
  }
  Endpoint e{.host = u.host_address(), .port = 80};
  if (u.has_port()) {
    const std::string_view port = u.port();
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || value == 0 ||
        value > 65535) {
      why = "bad port";
      return std::nullopt;
    }
    e.port = static_cast<unsigned short>(value);
  }
  if (!u.encoded_path().empty() && u.encoded_path() != "/") {
    why = "must not have a path (requests keep their own path)";
    return std::nullopt;
  }
  if (u.has_query() || u.has_fragment()) {
    why = "must not have a query or fragment";
    return std::nullopt;
  }
  return e;
}

void validate_endpoint(const std::string& key, const std::string& value, const Origins& origins,
                       Problems& problems) {
  if (!parse_endpoint(value)) {
    problems.check(key, origins.shown(key),
                   "bad address " + in_quotes(value) +
                       " (use host:port, [::1]:port for IPv6; port 0 to 65535)");
  }
}

void validate_positive(const std::string& path, Duration d, const Origins& origins,
                       Problems& problems) {
  if (d <= Duration::zero()) {
    problems.check(path, origins.shown(path), "must be greater than 0");
  }
}

void validate_scaler(const std::string& path, const Scaler& s, const Origins& origins,
                     Problems& problems) {
  const auto check = [&](const std::string& key, std::string_view message) {
    const std::string p = path + "." + key;
    problems.check(p, origins.shown(p), message);
  };
  if (!one_of(s.type, {"kubernetes", "process", "static"})) {
    check("type", "must be one of kubernetes, process, static (got " + in_quotes(s.type) + ")");
    return;
  }
  if (s.type == "kubernetes") {
    if (s.deployment.empty()) {
      check("deployment", "required for the kubernetes scaler");
    }
    if (s.replicas < 1) {
      check("replicas", "must be at least 1");
    }
  } else {
    for (const auto& [key, set] : {std::pair<std::string, bool>{"namespace", !s.namespace_.empty()},
                                   {"deployment", !s.deployment.empty()},
                                   {"kubeconfig", !s.kubeconfig.empty()}}) {
      if (set) {
        check(key, "only used by the kubernetes scaler (type is " + s.type + ")");
      }
    }
  }
  if (s.type == "process") {
    if (s.command.empty() || s.command.front().empty()) {
      check("command", "required for the process scaler");
    }
    validate_positive(path + ".stop_timeout", s.stop_timeout, origins, problems);
    for (const auto& [name, value] : s.env) {
      if (name.empty() || name.find('=') != std::string::npos) {
        check("env." + name, "bad variable name " + in_quotes(name));
      }
    }
  } else {
    if (!s.command.empty()) {
      check("command", "only used by the process scaler (type is " + s.type + ")");
    }
    if (!s.env.empty()) {
      check("env", "only used by the process scaler (type is " + s.type + ")");
    }
  }
}

void validate_backend(const std::string& path, const Backend& b, const Origins& origins,
                      Problems& problems) {
  const auto check = [&](const std::string& key, std::string_view message) {
    const std::string p = path + "." + key;
    problems.check(p, origins.shown(p), message);
  };
  if (!b.name.empty() && !std::all_of(b.name.begin(), b.name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-';
      })) {
    check("name", in_quotes(b.name) + " may use only letters, digits, '.', '_' and '-'");
  }
  if (b.upstream.empty()) {
    check("upstream", "required");
  } else if (std::string why; !parse_upstream_why(b.upstream, why)) {
    check("upstream", "bad URL " + in_quotes(b.upstream) + ": " + why);
  }
  validate_positive(path + ".idle_timeout", b.idle_timeout, origins, problems);
  validate_positive(path + ".wake_timeout", b.wake_timeout, origins, problems);
  validate_positive(path + ".upstream_timeout", b.upstream_timeout, origins, problems);
  validate_positive(path + ".health.interval", b.health.interval, origins, problems);
  if (b.health.path.empty() || b.health.path.front() != '/') {
    check("health.path", "must start with '/' (got " + in_quotes(b.health.path) + ")");
  }
  const auto check_headers = [&](const std::string& key,
                                 const std::map<std::string, std::string>& headers) {
    for (const auto& [name, value] : headers) {
      if (name.empty() || !std::all_of(name.begin(), name.end(), is_token_char)) {
        check(key + "." + name, "bad header name " + in_quotes(name));
      } else if (value.find_first_of("\r\n") != std::string::npos ||
                 value.find('\0') != std::string::npos) {
        check(key + "." + name, "header values must not contain line breaks");
      }
    }
  };
  check_headers("health.headers", b.health.headers);
  check_headers("upstream_headers", b.upstream_headers);
  for (const auto& [name, value] : b.upstream_headers) {
    const std::string lowered = lower(name);
    // The framing, the connection's own fields and what the proxy writes itself.
    for (std::string_view own :
         {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
          "te", "trailer", "expect", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"}) {
      if (lowered == own) {
        check("upstream_headers." + name, "is written by the proxy itself and cannot be set");
      }
    }
  }
  validate_scaler(path + ".scaler", b.scaler, origins, problems);
}

void validate(Config& c, const Origins& origins, Problems& problems) {
  const auto check = [&](const std::string& path, std::string_view message) {
    problems.check(path, origins.shown(path), message);
  };
  validate_endpoint("listen", c.listen, origins, problems);
  validate_endpoint("admin_listen", c.admin_listen, origins, problems);
  if (const auto a = parse_endpoint(c.listen), b = parse_endpoint(c.admin_listen);
      a && b && a->port != 0 && a->port == b->port && a->host == b->host) {
    check("admin_listen", "same address as listen");
  }
  if (c.threads < 1 || c.threads > 64) {
    check("threads", "must be between 1 and 64");
  }
  if (!one_of(c.log.level, {"trace", "debug", "info", "warn", "error"})) {
    check("log.level",
          "must be one of trace, debug, info, warn, error (got " + in_quotes(c.log.level) + ")");
  }
  if (!one_of(c.log.format, {"json", "text"})) {
    check("log.format", "must be one of json, text (got " + in_quotes(c.log.format) + ")");
  }
  const Limits& l = c.limits;
  for (const auto& [key, value] :
       {std::pair<std::string, std::size_t>{"max_header_bytes", l.max_header_bytes},
        {"max_body_bytes", l.max_body_bytes},
        {"max_pending_bytes", l.max_pending_bytes},
        {"max_connections", l.max_connections}}) {
    if (value == 0) {
      check("limits." + key, "must be greater than 0");
    }
  }
  validate_positive("limits.header_timeout", l.header_timeout, origins, problems);
  validate_positive("limits.keepalive_timeout", l.keepalive_timeout, origins, problems);
  validate_positive("limits.send_timeout", l.send_timeout, origins, problems);

  if (c.backends.empty()) {
    check("backends", "at least one backend is required");
    return;
  }
  if (c.backends.size() == 1 && c.backends.front().name.empty()) {
    c.backends.front().name = "default";
  }
  std::map<std::string, std::size_t> names;
  std::map<std::string, std::size_t> models;
  std::optional<std::size_t> default_backend;
  for (std::size_t i = 0; i < c.backends.size(); ++i) {
    const Backend& b = c.backends[i];
    const std::string path = element("backends", i);
    const std::string described = in_quotes(b.name) + " (" + path + ")";
    if (b.name.empty()) {
      check(path + ".name", "required");
    } else if (const auto [it, added] = names.emplace(b.name, i); !added) {
      check(path + ".name", "duplicate name " + in_quotes(b.name) + " (also backends[" +
                                std::to_string(it->second) + "])");
    }
    for (std::size_t m = 0; m < b.models.size(); ++m) {
      const std::string model_path = element(path + ".models", m);
      const std::string& model = b.models[m];
      if (model.empty()) {
        check(model_path, "empty model name");
      } else if (const auto [it, added] = models.emplace(model, i); !added) {
        const Backend& other = c.backends[it->second];
        check(model_path, it->second == i
                              ? "model " + in_quotes(model) + " is listed twice"
                              : "model " + in_quotes(model) + " is served by both backend " +
                                    described + " and backend " + in_quotes(other.name) +
                                    " (backends[" + std::to_string(it->second) + "])");
      }
    }
    if (b.default_) {
      if (default_backend) {
        check(path + ".default", "only one backend may be the default; backend " +
                                     in_quotes(c.backends[*default_backend].name) + " (backends[" +
                                     std::to_string(*default_backend) + "]) already is");
      } else {
        default_backend = i;
      }
    }
    if (b.models.empty() && !b.default_) {
      check(path + ".models", "backend " + described +
                                  " has no models and is not the default, so no request can "
                                  "reach it");
    }
    validate_backend(path, b, origins, problems);
  }
}

std::string help_footer() {
  return "Each setting flag can also come from the environment: " + env_name("idle-timeout") +
         " for --idle-timeout, and so on (" + env_name("model") + " is comma-separated). " +
         env_name("config") +
         " names the config file.\nPrecedence: flags > environment > YAML file > defaults.";
}

// ---- YAML output ----

bool is_secret_name(std::string_view name) {
  const std::string n = lower(name);
  for (std::string_view word : {"authorization", "key", "token", "secret", "password"}) {
    if (n.find(word) != std::string::npos) {
      return true;
    }
  }
  return false;
}

// A string as the loader must read it back: "${" would otherwise be expanded again.
std::string literal(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s.compare(i, 2, "${") == 0) {
      out += '$';
    }
    out += s[i];
  }
  return out;
}

// Which values of a map are secrets, written as "***".
enum class Mask { secret_names, all };

void emit_string_map(YAML::Emitter& out, const std::map<std::string, std::string>& m,
                     Mask mask = Mask::secret_names) {
  if (m.empty()) {
    out << YAML::Flow;
  }
  out << YAML::BeginMap;
  for (const auto& [name, value] : m) {
    // A plain key may be at most 1024 characters as written (YAML 1.2 §7.4.2), escapes included
    // (up to 6 per byte): a longer one is written as an explicit key ("? name").
    if (name.size() > 128) {
      out << YAML::LongKey;
    }
    const bool secret = mask == Mask::all || is_secret_name(name);
    out << YAML::Key << name << YAML::Value << (secret ? "***" : literal(value));
  }
  out << YAML::EndMap;
}

void emit_string_list(YAML::Emitter& out, const std::vector<std::string>& list) {
  out << YAML::Flow << YAML::BeginSeq;
  for (const std::string& s : list) {
    out << literal(s);
  }
  out << YAML::EndSeq;
}

// A process command with secrets in its arguments ("--api-key X", "--api-key=X") masked.
std::vector<std::string> masked_command(const std::vector<std::string>& command) {
  std::vector<std::string> out;
  bool mask_next = false;
  for (const std::string& word : command) {
    if (mask_next) {
      out.emplace_back("***");
      mask_next = false;
      continue;
    }
    const std::size_t eq = word.find('=');
    if (word.starts_with("-") && is_secret_name(word.substr(0, eq))) {
      if (eq == std::string::npos) {
        mask_next = true;
        out.push_back(word);
      } else {
        out.push_back(word.substr(0, eq + 1) + "***");
      }
      continue;
    }
    out.push_back(word);
  }
  return out;
}

}  // namespace

std::vector<std::string> mask_command_secrets(const std::vector<std::string>& command) {
  return masked_command(command);
}

ConfigError::ConfigError(std::vector<std::string> problems)
    : std::runtime_error(join(problems, "\n")), problems_(std::move(problems)) {}

std::optional<Endpoint> parse_endpoint(std::string_view s) {
  std::string_view host;
  std::string_view port;
  if (!s.empty() && s.front() == '[') {
    const std::size_t close = s.find(']');
    if (close == std::string_view::npos || s.substr(close + 1, 1) != ":") {
      return std::nullopt;
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
    if (!boost::urls::parse_ipv6_address(host)) {
      return std::nullopt;
    }
  } else {
    const std::size_t colon = s.rfind(':');
    if (colon == std::string_view::npos) {
      return std::nullopt;
    }
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    const auto host_char = [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '-' || c == '_';
    };
    if (host.empty() || !std::all_of(host.begin(), host.end(), host_char)) {
      return std::nullopt;  // also rejects an unbracketed IPv6 address
    }
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  unsigned value = 0;
  std::from_chars(port.data(), port.data() + port.size(), value);
  if (value > 65535) {
    return std::nullopt;
  }
  return Endpoint{.host = std::string(host), .port = static_cast<unsigned short>(value)};
}

std::optional<Endpoint> parse_upstream(std::string_view s) {
  std::string why;
  return parse_upstream_why(s, why);
}

Loaded load(int argc, const char* const* argv, const std::map<std::string, std::string>& env) {
  Loaded loaded;

  CLI::App app{
      "vllm-autoscaler: an OpenAI-compatible reverse proxy that scales vLLM to zero "
      "when idle and wakes it on the first request."};
  app.name("vllm-autoscaler");
  app.footer(help_footer());
  std::string config_file;
  std::string print_file;  // --print-config FILE and --check-config FILE name the file too
  std::string check_file;
  bool version = false;
  app.add_option("--config", config_file, "YAML config file")->type_name("FILE");
  auto* print_config =
      app.add_option("--print-config", print_file,
                     "Print the effective config (secrets masked) and exit; FILE as --config")
          ->expected(0, 1)
          ->type_name("[FILE]");
  auto* check_config =
      app.add_option("--check-config", check_file,
                     "Validate the config, list every problem, exit 0 or 2; FILE as --config")
          ->expected(0, 1)
          ->type_name("[FILE]");
  app.add_flag("--version", version, "Print the version and exit");

  std::map<std::string, std::string> flag_values;
  std::vector<std::string> flag_models;
  std::map<std::string, CLI::Option*> options;
  struct Help {
    std::string_view type;
    std::string_view text;
  };
  const std::map<std::string_view, Help> help{
      {"listen", {"HOST:PORT", "Public OpenAI-compatible address"}},
      {"admin-listen", {"HOST:PORT", "Admin address (/healthz /readyz /metrics /status)"}},
      {"threads", {"N", "I/O threads, 1 to 64"}},
      {"log-level", {"LEVEL", "trace | debug | info | warn | error"}},
      {"log-format", {"FORMAT", "json | text"}},
      {"api-key-file", {"FILE", "Accepted API keys, one per line"}},
      {"upstream", {"URL", "Single backend: its http://host:port"}},
      {"model", {"NAME", "Single backend: a model routed to it (repeatable)"}},
      {"idle-timeout", {"DURATION", "Single backend: scale down after this long idle (5m)"}},
      {"wake-timeout", {"DURATION", "Single backend: give up waking after this long (2m)"}},
      {"k8s-namespace", {"NAME", "Single backend: the Deployment's namespace"}},
      {"k8s-deployment", {"NAME", "Single backend: the Deployment to scale (kubernetes scaler)"}},
      {"process-command", {"CMD", "Single backend: the command to start (process scaler)"}},
  };
  for (std::string_view flag : kOverridable) {
    const std::string name = "--" + std::string(flag);
    const Help& h = help.at(flag);
    CLI::Option* option =
        flag == "model" ? app.add_option(name, flag_models, std::string(h.text))
                        : app.add_option(name, flag_values[std::string(flag)], std::string(h.text));
    option->type_name(std::string(h.type));
    if (flag == "model") {
      option->allow_extra_args(false);  // `--model a b` is a mistake, not two models
    }
    options[std::string(flag)] = option;
  }

  std::vector<std::string> args;
  for (int i = argc - 1; i > 0; --i) {
    args.emplace_back(argv[i]);
  }
  try {
    app.parse(std::move(args));
  } catch (const CLI::CallForHelp&) {
    loaded.action = Action::help;
    loaded.help_text = app.help();
    return loaded;
  } catch (const CLI::ParseError& e) {
    throw ConfigError({std::string("flags: ") + e.what() + " (see --help)"});
  }
  if (version) {
    loaded.action = Action::version;
    return loaded;
  }
  loaded.action = print_config->count() > 0   ? Action::print_config
                  : check_config->count() > 0 ? Action::check_config
                                              : Action::run;
  for (const std::string* named : {&print_file, &check_file}) {
    if (named->empty()) {
      continue;
    }
    if (!config_file.empty() && config_file != *named) {
      throw ConfigError({"flags: two config files named (" + in_quotes(config_file) + " and " +
                         in_quotes(*named) + ")"});
    }
    config_file = *named;
  }

  Problems problems;
  Overrides overrides;
  for (std::string_view flag : kOverridable) {
    const std::string name = env_name(flag);
    // Empty means unset: manifests often template variables that may be blank. Other
    // VLLM_AUTOSCALER_* names are not errors: Kubernetes injects VLLM_AUTOSCALER_PORT and
    // VLLM_AUTOSCALER_SERVICE_HOST for a Service of that name.
    if (const auto it = env.find(name); it != env.end() && !it->second.empty()) {
      overrides[std::string(flag)] = Override{
          .values = flag == "model" ? split_list(it->second) : std::vector<std::string>{it->second},
          .source = name};
    }
    if (options.at(std::string(flag))->count() > 0) {
      overrides[std::string(flag)] = Override{
          .values = flag == "model" ? flag_models
                                    : std::vector<std::string>{flag_values.at(std::string(flag))},
          .source = "--" + std::string(flag)};
    }
    if (const auto it = overrides.find(flag); it != overrides.end()) {
      for (const std::string& value : it->second.values) {
        if (invalid_utf8(value) != std::string_view::npos) {
          problems.add(it->second.source, "not valid UTF-8");
        }
      }
    }
  }
  Config& c = loaded.config;
  if (config_file.empty()) {
    if (const auto it = env.find(env_name("config")); it != env.end()) {
      config_file = it->second;
    }
  }
  if (!config_file.empty() && !load_file(config_file, env, problems, c)) {
    throw ConfigError(problems.list());
  }
  Origins origins;
  apply_overrides(overrides, c, origins, problems);
  load_keys(c.auth, origins, problems);
  validate(c, origins, problems);
  if (!problems.empty()) {
    throw ConfigError(problems.list());
  }
  return loaded;
}

std::map<std::string, std::string> environment_map(char** envp) {
  std::map<std::string, std::string> env;
  for (char** p = envp; p != nullptr && *p != nullptr; ++p) {
    const std::string_view entry(*p);
    const std::size_t eq = entry.find('=');
    if (eq != std::string_view::npos && eq > 0) {
      env.emplace(entry.substr(0, eq), entry.substr(eq + 1));
    }
  }
  return env;
}

std::string to_yaml(const Config& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "listen" << YAML::Value << literal(c.listen);
  out << YAML::Key << "admin_listen" << YAML::Value << literal(c.admin_listen);
  out << YAML::Key << "threads" << YAML::Value << c.threads;
  out << YAML::Key << "log" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "level" << YAML::Value << literal(c.log.level);
  out << YAML::Key << "format" << YAML::Value << literal(c.log.format);
  out << YAML::EndMap;
  if (!c.auth.api_keys_file.empty() || !c.auth.api_keys.empty()) {
    out << YAML::Key << "auth" << YAML::Value << YAML::BeginMap;
    if (!c.auth.api_keys_file.empty()) {
      out << YAML::Key << "api_keys_file" << YAML::Value << literal(c.auth.api_keys_file);
    }
    if (!c.auth.api_keys.empty()) {
      out << YAML::Key << "api_keys" << YAML::Value << YAML::Flow << YAML::BeginSeq;
      for (std::size_t i = 0; i < c.auth.api_keys.size(); ++i) {
        out << "***";
      }
      out << YAML::EndSeq;
    }
    out << YAML::EndMap;
  }
  const Limits& l = c.limits;
  out << YAML::Key << "limits" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "max_header_bytes" << YAML::Value << l.max_header_bytes;
  out << YAML::Key << "max_body_bytes" << YAML::Value << l.max_body_bytes;
  out << YAML::Key << "max_pending_bytes" << YAML::Value << l.max_pending_bytes;
  out << YAML::Key << "max_connections" << YAML::Value << l.max_connections;
  out << YAML::Key << "header_timeout" << YAML::Value << format_duration(l.header_timeout);
  out << YAML::Key << "keepalive_timeout" << YAML::Value << format_duration(l.keepalive_timeout);
  out << YAML::Key << "send_timeout" << YAML::Value << format_duration(l.send_timeout);
  out << YAML::Key << "shutdown_timeout" << YAML::Value << format_duration(l.shutdown_timeout);
  out << YAML::EndMap;
  out << YAML::Key << "backends" << YAML::Value << YAML::BeginSeq;
  for (const Backend& b : c.backends) {
    out << YAML::BeginMap;
    out << YAML::Key << "name" << YAML::Value << literal(b.name);
    out << YAML::Key << "models" << YAML::Value;
    emit_string_list(out, b.models);
    out << YAML::Key << "default" << YAML::Value << b.default_;
    out << YAML::Key << "upstream" << YAML::Value << literal(b.upstream);
    out << YAML::Key << "idle_timeout" << YAML::Value << format_duration(b.idle_timeout);
    out << YAML::Key << "wake_timeout" << YAML::Value << format_duration(b.wake_timeout);
    out << YAML::Key << "upstream_timeout" << YAML::Value << format_duration(b.upstream_timeout);
    out << YAML::Key << "max_pending" << YAML::Value << b.max_pending;
    out << YAML::Key << "upstream_headers" << YAML::Value;
    emit_string_map(out, b.upstream_headers, Mask::all);
    out << YAML::Key << "health" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "path" << YAML::Value << literal(b.health.path);
    out << YAML::Key << "interval" << YAML::Value << format_duration(b.health.interval);
    out << YAML::Key << "headers" << YAML::Value;
    emit_string_map(out, b.health.headers);
    out << YAML::EndMap;
    const Scaler& s = b.scaler;
    out << YAML::Key << "scaler" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "type" << YAML::Value << literal(s.type);
    // Only the type's own fields: the loader rejects the others, and the output must load back.
    if (s.type == "kubernetes") {
      if (!s.namespace_.empty()) {
        out << YAML::Key << "namespace" << YAML::Value << literal(s.namespace_);
      }
      out << YAML::Key << "deployment" << YAML::Value << literal(s.deployment);
      out << YAML::Key << "replicas" << YAML::Value << s.replicas;
      if (!s.kubeconfig.empty()) {
        out << YAML::Key << "kubeconfig" << YAML::Value << literal(s.kubeconfig);
      }
    } else if (s.type == "process") {
      out << YAML::Key << "command" << YAML::Value;
      emit_string_list(out, masked_command(s.command));
      out << YAML::Key << "env" << YAML::Value;
      emit_string_map(out, s.env);
      out << YAML::Key << "stop_timeout" << YAML::Value << format_duration(s.stop_timeout);
    }
    out << YAML::EndMap;
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace va::config
