// --print-config: the effective Config as YAML that loads back, secrets masked.
#include <yaml-cpp/yaml.h>

#include <string>
#include <string_view>
#include <vector>

#include "config/loader.hpp"
#include "config/text.hpp"
#include "core/duration.hpp"

namespace va::config {
namespace {

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

void emit_auth(YAML::Emitter& out, const Auth& a) {
  if (a.api_keys_file.empty() && a.api_keys.empty()) {
    return;
  }
  out << YAML::Key << "auth" << YAML::Value << YAML::BeginMap;
  if (!a.api_keys_file.empty()) {
    out << YAML::Key << "api_keys_file" << YAML::Value << literal(a.api_keys_file);
  }
  if (!a.api_keys.empty()) {
    out << YAML::Key << "api_keys" << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (std::size_t i = 0; i < a.api_keys.size(); ++i) {
      out << "***";
    }
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
}

void emit_limits(YAML::Emitter& out, const Limits& l) {
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
}

void emit_coordination(YAML::Emitter& out, const Coordination& k) {
  out << YAML::Key << "coordination" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "type" << YAML::Value << literal(k.type);
  if (k.type == "kubernetes") {
    out << YAML::Key << "identity" << YAML::Value << literal(k.identity);
    out << YAML::Key << "lease_name" << YAML::Value << literal(k.lease_name);
    if (!k.namespace_.empty()) {
      out << YAML::Key << "namespace" << YAML::Value << literal(k.namespace_);
    }
    out << YAML::Key << "lease_duration" << YAML::Value << format_duration(k.lease_duration);
    out << YAML::Key << "heartbeat_interval" << YAML::Value
        << format_duration(k.heartbeat_interval);
    if (!k.kubeconfig.empty()) {
      out << YAML::Key << "kubeconfig" << YAML::Value << literal(k.kubeconfig);
    }
  }
  out << YAML::EndMap;
}

void emit_scaler(YAML::Emitter& out, const Scaler& s) {
  out << YAML::Key << "scaler" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "type" << YAML::Value << literal(s.type);
  // Only the type's own fields: the loader rejects the others, and the output must load back.
  if (s.type == "kubernetes") {
    if (!s.namespace_.empty()) {
      out << YAML::Key << "namespace" << YAML::Value << literal(s.namespace_);
    }
    out << YAML::Key << "deployment" << YAML::Value << literal(s.deployment);
    if (!s.service.empty()) {
      out << YAML::Key << "service" << YAML::Value << literal(s.service);
    }
    if (s.target_in_flight) {
      out << YAML::Key << "target_in_flight" << YAML::Value << *s.target_in_flight;
      out << YAML::Key << "min_replicas" << YAML::Value << s.min_replicas.value_or(1);
      out << YAML::Key << "max_replicas" << YAML::Value << s.max_replicas.value_or(1);
      out << YAML::Key << "stable_window" << YAML::Value << format_duration(s.stable_window);
      out << YAML::Key << "panic_window" << YAML::Value << format_duration(s.panic_window);
    } else {
      out << YAML::Key << "replicas" << YAML::Value << s.replicas.value_or(1);
    }
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
}

void emit_backend(YAML::Emitter& out, const Backend& b) {
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
  out << YAML::Key << "routing" << YAML::Value << literal(b.routing);
  out << YAML::Key << "routing_prefix_bytes" << YAML::Value << b.routing_prefix_bytes;
  out << YAML::Key << "upstream_headers" << YAML::Value;
  emit_string_map(out, b.upstream_headers, Mask::all);
  out << YAML::Key << "health" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "path" << YAML::Value << literal(b.health.path);
  out << YAML::Key << "interval" << YAML::Value << format_duration(b.health.interval);
  out << YAML::Key << "headers" << YAML::Value;
  emit_string_map(out, b.health.headers);
  out << YAML::EndMap;
  emit_scaler(out, b.scaler);
  out << YAML::EndMap;
}

}  // namespace

std::vector<std::string> mask_command_secrets(const std::vector<std::string>& command) {
  return masked_command(command);
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
  emit_auth(out, c.auth);
  emit_limits(out, c.limits);
  emit_coordination(out, c.coordination);
  out << YAML::Key << "backends" << YAML::Value << YAML::BeginSeq;
  for (const Backend& b : c.backends) {
    emit_backend(out, b);
  }
  out << YAML::EndSeq;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace va::config
