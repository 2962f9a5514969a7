#include "config/yaml_reader.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <initializer_list>
#include <optional>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "core/duration.hpp"

namespace va::config {
namespace {

bool valid_variable_name(std::string_view name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name.front())) != 0) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
  });
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
        {"type", "namespace", "deployment", "service", "replicas", "target_in_flight",
         "min_replicas", "max_replicas", "stable_window", "panic_window", "kubeconfig", "command",
         "env", "stop_timeout"},
        [&](const std::string& key, const YAML::Node& v, const std::string& p) {
          if (key == "type") {
            d.string(v, p, s.type);
          } else if (key == "namespace") {
            d.string(v, p, s.namespace_);
          } else if (key == "deployment") {
            d.string(v, p, s.deployment);
          } else if (key == "service") {
            d.string(v, p, s.service);
          } else if (key == "replicas") {
            d.number(v, p, s.replicas.emplace());
          } else if (key == "target_in_flight") {
            d.number(v, p, s.target_in_flight.emplace());
          } else if (key == "min_replicas") {
            d.number(v, p, s.min_replicas.emplace());
          } else if (key == "max_replicas") {
            d.number(v, p, s.max_replicas.emplace());
          } else if (key == "stable_window") {
            d.duration(v, p, s.stable_window);
          } else if (key == "panic_window") {
            d.duration(v, p, s.panic_window);
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
  d.map(
      node, path,
      {"name", "models", "default", "upstream", "idle_timeout", "wake_timeout", "upstream_timeout",
       "max_pending", "routing", "routing_prefix_bytes", "upstream_headers", "health", "scaler"},
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
        } else if (key == "routing") {
          d.string(v, p, b.routing);
        } else if (key == "routing_prefix_bytes") {
          d.number(v, p, b.routing_prefix_bytes);
        } else if (key == "upstream_headers") {
          d.string_map(v, p, b.upstream_headers);
        } else if (key == "health") {
          decode_health(d, v, p, b.health);
        } else {
          decode_scaler(d, v, p, b.scaler);
        }
      });
}

void decode_limits(Decoder& d, const YAML::Node& node, const std::string& path, Limits& l) {
  d.map(node, path,
        {"max_header_bytes", "max_body_bytes", "max_pending_bytes", "max_connections",
         "header_timeout", "keepalive_timeout", "send_timeout", "shutdown_timeout"},
        [&](const std::string& key, const YAML::Node& v, const std::string& p) {
          if (key == "max_header_bytes") {
            d.number(v, p, l.max_header_bytes);
          } else if (key == "max_body_bytes") {
            d.number(v, p, l.max_body_bytes);
          } else if (key == "max_pending_bytes") {
            d.number(v, p, l.max_pending_bytes);
          } else if (key == "max_connections") {
            d.number(v, p, l.max_connections);
          } else if (key == "header_timeout") {
            d.duration(v, p, l.header_timeout);
          } else if (key == "keepalive_timeout") {
            d.duration(v, p, l.keepalive_timeout);
          } else if (key == "send_timeout") {
            d.duration(v, p, l.send_timeout);
          } else {
            d.duration(v, p, l.shutdown_timeout);
          }
        });
}

void decode_coordination(Decoder& d, const YAML::Node& node, const std::string& path,
                         Coordination& c) {
  d.map(node, path,
        {"type", "identity", "lease_name", "namespace", "lease_duration", "heartbeat_interval",
         "kubeconfig"},
        [&](const std::string& key, const YAML::Node& v, const std::string& p) {
          if (key == "lease_duration" || key == "heartbeat_interval") {
            d.duration(v, p, key == "lease_duration" ? c.lease_duration : c.heartbeat_interval);
          } else {
            d.string(v, p,
                     key == "type"         ? c.type
                     : key == "identity"   ? c.identity
                     : key == "lease_name" ? c.lease_name
                     : key == "namespace"  ? c.namespace_
                                           : c.kubeconfig);
          }
        });
}

void decode_config(Decoder& d, Problems& problems, const YAML::Node& root, Config& c) {
  d.map(root, "",
        {"listen", "admin_listen", "threads", "log", "auth", "limits", "coordination", "backends"},
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
            decode_limits(d, v, p, c.limits);
          } else if (key == "coordination") {
            decode_coordination(d, v, p, c.coordination);
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

}  // namespace

bool read_yaml_file(const std::string& file, const Env& env, Problems& problems, Config& c) {
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

}  // namespace va::config
