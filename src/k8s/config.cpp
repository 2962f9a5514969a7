#include "k8s/config.hpp"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/config_error.hpp"

namespace va::k8s {
namespace {

namespace fs = std::filesystem;

std::string trim(std::string_view s) {
  const auto* ws = " \t\r\n";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) {
    return {};
  }
  const auto e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    return std::nullopt;
  }
  return ss.str();
}

bool valid_port(std::string_view port) {
  int n = 0;
  for (const char c : port) {
    if (c < '0' || c > '9' || (n = n * 10 + (c - '0')) > 65535) {
      return false;
    }
  }
  return !port.empty() && n > 0;
}

bool is_ipv6(std::string_view host) { return host.find(':') != std::string_view::npos; }

// One parsed kubeconfig file.
struct File {
  std::string path;
  YAML::Node root;
};

std::string scalar(const YAML::Node& n, const char* key) {
  const YAML::Node v = n[key];
  if (!v || v.IsNull()) {
    return {};
  }
  if (!v.IsScalar()) {
    throw YAML::Exception(v.Mark(), std::string(key) + " is not a scalar");
  }
  return v.as<std::string>();
}

// The `what` entry named `name` (e.g. clusters[].name == name → its `cluster` map) in the first
// file defining it; nullptr if none does.
const File* find_named(const std::vector<File>& files, const char* list, const char* what,
                       const std::string& name, YAML::Node& out) {
  for (const auto& f : files) {
    const YAML::Node entries = f.root[list];
    if (!entries || !entries.IsSequence()) {
      continue;
    }
    for (const auto& e : entries) {
      if (e.IsMap() && scalar(e, "name") == name) {
        out = e[what];
        return &f;
      }
    }
  }
  return nullptr;
}

// A path from the kubeconfig, relative to the directory of the file holding it.
std::string resolve(const File& f, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute()) {
    return p;
  }
  return (fs::path(f.path).parent_path() / p).string();
}

// The PEM from `<key>-data` (base64) or the file `<key>`; empty if neither is set.
std::string pem_from(const File& f, const YAML::Node& n, const std::string& key,
                     const std::string& where, std::vector<std::string>& problems) {
  if (const auto data = scalar(n, (key + "-data").c_str()); !data.empty()) {
    auto decoded = base64_decode(data);
    if (!decoded) {
      problems.push_back(where + "." + key + "-data: not valid base64");
      return {};
    }
    return *decoded;
  }
  if (const auto path = scalar(n, key.c_str()); !path.empty()) {
    const auto full = resolve(f, path);
    auto content = read_file(full);
    if (!content) {
      problems.push_back(where + "." + key + ": cannot read " + full);
      return {};
    }
    return *content;
  }
  return {};
}

// Splits "https://host:port/prefix" into cfg; adds a problem if it is not an https URL.
void parse_server(const std::string& server, const std::string& where, ClusterConfig& cfg,
                  std::vector<std::string>& problems) {
  constexpr std::string_view kScheme = "https://";
  std::string_view s = server;
  if (s.substr(0, kScheme.size()) != kScheme) {
    problems.push_back(where + ".server: \"" + server + "\" is not an https:// URL");
    return;
  }
  s.remove_prefix(kScheme.size());
  const auto slash = s.find('/');
  std::string_view authority = s.substr(0, slash);
  if (slash != std::string_view::npos) {
    std::string_view prefix = s.substr(slash);
    while (!prefix.empty() && prefix.back() == '/') {
      prefix.remove_suffix(1);
    }
    cfg.path_prefix = std::string(prefix);
  }
  std::string_view host;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) {
      problems.push_back(where + ".server: \"" + server + "\" has an unclosed '['");
      return;
    }
    host = authority.substr(1, close - 1);
    const auto rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        problems.push_back(where + ".server: \"" + server + "\" is not host:port");
        return;
      }
      port = rest.substr(1);
    }
  } else {
    const auto colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
    }
  }
  if (host.empty()) {
    problems.push_back(where + ".server: \"" + server + "\" has no host");
    return;
  }
  if (port.empty()) {
    port = "443";
  }
  if (!valid_port(port)) {
    problems.push_back(where + ".server: \"" + server + "\" has an invalid port");
    return;
  }
  cfg.host = std::string(host);
  cfg.port = std::string(port);
}

// A string-valued key of the exec map; a problem (and "") if it is there but not a string.
std::string exec_string(const YAML::Node& n, const char* key, const std::string& where,
                        std::vector<std::string>& problems) {
  const YAML::Node v = n[key];
  if (!v || v.IsNull()) {
    return {};
  }
  if (!v.IsScalar()) {
    problems.push_back(where + "." + key + ": not a string");
    return {};
  }
  return v.as<std::string>();
}

// users[].user.exec, checked as client-go's clientcmd validation and defaulting do.
ExecConfig parse_exec(const File& f, const YAML::Node& n, const std::string& where,
                      std::vector<std::string>& problems) {
  ExecConfig e;
  if (!n.IsMap()) {
    problems.push_back(where + ": not a mapping");
    return e;
  }
  e.api_version = exec_string(n, "apiVersion", where, problems);
  if (e.api_version.empty()) {
    problems.push_back(where + ".apiVersion: missing (" + kExecApiV1 + " or " + kExecApiV1beta1 +
                       ")");
  } else if (e.api_version != kExecApiV1 && e.api_version != kExecApiV1beta1) {
    problems.push_back(where + ".apiVersion: \"" + e.api_version + "\" is not supported (" +
                       kExecApiV1 + " or " + kExecApiV1beta1 + ")");
  }

  e.command = exec_string(n, "command", where, problems);
  if (e.command.empty()) {
    problems.push_back(where + ".command: missing");
  } else if (e.command.find('/') != std::string::npos) {
    e.command = resolve(f, e.command);  // a bare name is looked up in PATH when it runs
  }

  if (const YAML::Node args = n["args"]; args && !args.IsNull()) {
    if (!args.IsSequence()) {
      problems.push_back(where + ".args: not a list of strings");
    } else {
      for (std::size_t i = 0; i < args.size(); ++i) {
        if (!args[i].IsScalar()) {
          problems.push_back(where + ".args[" + std::to_string(i) + "]: not a string");
        } else {
          e.args.push_back(args[i].as<std::string>());
        }
      }
    }
  }

  if (const YAML::Node env = n["env"]; env && !env.IsNull()) {
    if (!env.IsSequence()) {
      problems.push_back(where + ".env: not a list of {name, value}");
    } else {
      for (std::size_t i = 0; i < env.size(); ++i) {
        const std::string at = where + ".env[" + std::to_string(i) + "]";
        if (!env[i].IsMap()) {
          problems.push_back(at + ": not a mapping with name and value");
          continue;
        }
        auto name = exec_string(env[i], "name", at, problems);
        auto value = exec_string(env[i], "value", at, problems);
        if (name.empty()) {
          problems.push_back(at + ".name: missing");
        } else if (name.find('=') != std::string::npos) {
          problems.push_back(at + ".name: \"" + name + "\" contains '='");
        } else {
          e.env.emplace_back(std::move(name), std::move(value));
        }
      }
    }
  }

  e.interactive_mode = exec_string(n, "interactiveMode", where, problems);
  if (e.interactive_mode.empty() && e.api_version == kExecApiV1beta1) {
    e.interactive_mode = "IfAvailable";  // client-go's default for v1beta1
  }
  if (e.interactive_mode.empty()) {
    problems.push_back(where + ".interactiveMode: missing (required by " + kExecApiV1 +
                       "; use Never)");
  } else if (e.interactive_mode == "Always") {
    problems.push_back(where +
                       ".interactiveMode: Always is not supported: the proxy has no terminal for "
                       "the plugin to prompt on; use Never or IfAvailable");
  } else if (e.interactive_mode != "Never" && e.interactive_mode != "IfAvailable") {
    problems.push_back(where + ".interactiveMode: \"" + e.interactive_mode +
                       "\" is not one of Never, IfAvailable, Always");
  }

  if (const YAML::Node v = n["provideClusterInfo"]; v && !v.IsNull()) {
    if (!YAML::convert<bool>::decode(v, e.provide_cluster_info)) {
      problems.push_back(where + ".provideClusterInfo: not true or false");
    }
  }
  e.install_hint = exec_string(n, "installHint", where, problems);
  return e;
}

std::string label(const std::vector<std::string>& paths) {
  std::string out = "kubeconfig ";
  for (std::size_t i = 0; i < paths.size(); ++i) {
    out += (i ? ":" : "") + paths[i];
  }
  return out;
}

// Non-empty KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT.
bool in_cluster_available(const Env& env) {
  const auto h = env.find("KUBERNETES_SERVICE_HOST");
  const auto p = env.find("KUBERNETES_SERVICE_PORT");
  return h != env.end() && !h->second.empty() && p != env.end() && !p->second.empty();
}

}  // namespace

std::string ClusterConfig::host_header() const {
  return (is_ipv6(host) ? "[" + host + "]" : host) + ":" + port;
}

std::string base64_encode(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const auto v = static_cast<unsigned>(static_cast<unsigned char>(in[i])) << 16 |
                   static_cast<unsigned>(static_cast<unsigned char>(in[i + 1])) << 8 |
                   static_cast<unsigned>(static_cast<unsigned char>(in[i + 2]));
    out += {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63],
            kAlphabet[v & 63]};
  }
  if (const auto rest = in.size() - i; rest > 0) {
    auto v = static_cast<unsigned>(static_cast<unsigned char>(in[i])) << 16;
    if (rest == 2) {
      v |= static_cast<unsigned>(static_cast<unsigned char>(in[i + 1])) << 8;
    }
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size() * 3 / 4);
  unsigned acc = 0;
  int bits = 0;
  int pad = 0;
  for (const char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '+') {
      v = 62;
    } else if (c == '/') {
      v = 63;
    } else if (c == '=') {
      ++pad;
      continue;
    } else if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
      continue;
    } else {
      return std::nullopt;
    }
    if (pad) {
      return std::nullopt;  // data after padding
    }
    acc = (acc << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if (bits >= 6 || pad > 2) {
    return std::nullopt;  // a lone 6-bit group cannot encode a byte
  }
  return out;
}

ClusterConfig load_kubeconfig_files(const std::vector<std::string>& paths) {
  const std::string all = label(paths);
  if (paths.empty()) {
    throw ConfigError({"kubeconfig: no file given"});
  }
  std::vector<File> files;
  for (const auto& p : paths) {
    auto content = read_file(p);
    if (!content) {
      // kubectl skips missing files in a KUBECONFIG list; one that exists but is unreadable is
      // an error either way.
      if (paths.size() > 1 && !fs::exists(p)) {
        continue;
      }
      throw ConfigError({"kubeconfig " + p + ": cannot read the file"});
    }
    try {
      YAML::Node root = YAML::Load(*content);
      if (root && !root.IsNull() && !root.IsMap()) {
        throw ConfigError({"kubeconfig " + p + ": not a YAML mapping"});
      }
      files.push_back(File{p, root});
    } catch (const YAML::Exception& e) {
      throw ConfigError({"kubeconfig " + p + ": " + e.what()});
    }
  }

  try {
    std::string current;
    const File* current_file = nullptr;
    for (const auto& f : files) {
      if (current = scalar(f.root, "current-context"); !current.empty()) {
        current_file = &f;
        break;
      }
    }
    if (!current_file) {
      throw ConfigError({all + ": current-context is not set"});
    }
    YAML::Node ctx;
    const File* ctx_file = find_named(files, "contexts", "context", current, ctx);
    if (!ctx_file) {
      throw ConfigError({all + ": context \"" + current + "\" not found"});
    }
    if (!ctx || !ctx.IsMap()) {
      throw ConfigError(
          {"kubeconfig " + ctx_file->path + ": context \"" + current + "\" has no context map"});
    }
    const std::string cluster_name = scalar(ctx, "cluster");
    const std::string user_name = scalar(ctx, "user");

    ClusterConfig cfg;
    cfg.source = all + ", context " + current;
    if (auto ns = scalar(ctx, "namespace"); !ns.empty()) {
      cfg.namespace_ = ns;
    }
    std::vector<std::string> problems;

    YAML::Node cluster;
    const File* cluster_file =
        cluster_name.empty() ? nullptr
                             : find_named(files, "clusters", "cluster", cluster_name, cluster);
    if (cluster_name.empty()) {
      problems.push_back("kubeconfig " + ctx_file->path + ": context \"" + current +
                         "\" names no cluster");
    } else if (!cluster_file) {
      problems.push_back(all + ": cluster \"" + cluster_name + "\" (of context \"" + current +
                         "\") not found");
    } else if (!cluster.IsMap()) {
      problems.push_back("kubeconfig " + cluster_file->path + ": cluster \"" + cluster_name +
                         "\" has no cluster map");
    } else {
      const std::string where =
          "kubeconfig " + cluster_file->path + ": clusters[" + cluster_name + "].cluster";
      if (cfg.server = scalar(cluster, "server"); cfg.server.empty()) {
        problems.push_back(where + ".server: missing");
      } else {
        parse_server(cfg.server, where, cfg, problems);
      }
      cfg.ca_pem = pem_from(*cluster_file, cluster, "certificate-authority", where, problems);
      if (const auto v = cluster["insecure-skip-tls-verify"]; v && !v.IsNull()) {
        cfg.insecure_skip_tls_verify = v.as<bool>();
      }
      if (cfg.insecure_skip_tls_verify && !cfg.ca_pem.empty()) {
        // As kubectl: "specifying a root certificates file with the insecure flag is not allowed".
        problems.push_back(
            where + ": certificate-authority and insecure-skip-tls-verify exclude each other");
      }
      cfg.server_name = scalar(cluster, "tls-server-name");
      if (cfg.server_name.empty()) {
        cfg.server_name = cfg.host;
      }
      if (!scalar(cluster, "proxy-url").empty()) {
        problems.push_back(where + ".proxy-url: not supported yet");
      }
    }

    YAML::Node user;
    const File* user_file =
        user_name.empty() ? nullptr : find_named(files, "users", "user", user_name, user);
    if (!user_name.empty() && !user_file) {
      problems.push_back(all + ": user \"" + user_name + "\" (of context \"" + current +
                         "\") not found");
    } else if (user_file && user && !user.IsNull()) {
      const std::string where = "kubeconfig " + user_file->path + ": users[" + user_name + "].user";
      if (!user.IsMap()) {
        problems.push_back(where + ": not a mapping");
      } else {
        if (const YAML::Node exec = user["exec"]; exec && !exec.IsNull()) {
          cfg.exec = parse_exec(*user_file, exec, where + ".exec", problems);
          if (!scalar(user, "token").empty() || !scalar(user, "tokenFile").empty()) {
            // kubectl would send the static token and never run the plugin: say so instead.
            problems.push_back(where + ": token/tokenFile and exec exclude each other");
          }
        }
        if (user["auth-provider"]) {
          problems.push_back(where + ".auth-provider: not supported (deprecated in Kubernetes)");
        }
        cfg.token = scalar(user, "token");
        cfg.token_file = resolve(*user_file, scalar(user, "tokenFile"));
        if (!cfg.token_file.empty() && !read_file(cfg.token_file)) {
          problems.push_back(where + ".tokenFile: cannot read " + cfg.token_file);
        }
        cfg.client_cert_pem = pem_from(*user_file, user, "client-certificate", where, problems);
        cfg.client_key_pem = pem_from(*user_file, user, "client-key", where, problems);
        if (cfg.client_cert_pem.empty() != cfg.client_key_pem.empty()) {
          problems.push_back(where + ": client-certificate and client-key must be set together");
        }
        if (!scalar(user, "username").empty()) {
          problems.push_back(where + ".username: basic authentication is not supported");
        }
      }
    }
    if (!problems.empty()) {
      throw ConfigError(std::move(problems));
    }
    return cfg;
  } catch (const YAML::Exception& e) {
    throw ConfigError({all + ": " + e.what()});
  }
}

ClusterConfig in_cluster(const Env& env, const std::string& root) {
  if (!in_cluster_available(env)) {
    throw ConfigError(
        {"in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set (not "
         "running in a pod?)"});
  }
  ClusterConfig cfg;
  cfg.source = "in-cluster service account " + root;
  cfg.host = env.at("KUBERNETES_SERVICE_HOST");
  if (cfg.host.size() > 2 && cfg.host.front() == '[' && cfg.host.back() == ']') {
    cfg.host = cfg.host.substr(1, cfg.host.size() - 2);
  }
  cfg.port = env.at("KUBERNETES_SERVICE_PORT");
  cfg.server_name = cfg.host;
  cfg.server = "https://" + cfg.host_header();
  const fs::path dir(root);
  std::vector<std::string> problems;
  if (!valid_port(cfg.port)) {
    problems.push_back("in-cluster: KUBERNETES_SERVICE_PORT \"" + cfg.port + "\" is not a port");
  }
  if (auto ca = read_file((dir / "ca.crt").string())) {
    cfg.ca_pem = std::move(*ca);
  } else {
    problems.push_back("in-cluster: cannot read " + (dir / "ca.crt").string());
  }
  cfg.token_file = (dir / "token").string();
  if (!read_file(cfg.token_file)) {
    problems.push_back("in-cluster: cannot read " + cfg.token_file);
  }
  if (auto ns = read_file((dir / "namespace").string()); ns && !trim(*ns).empty()) {
    cfg.namespace_ = trim(*ns);
  }
  if (!problems.empty()) {
    throw ConfigError(std::move(problems));
  }
  return cfg;
}

TokenSource::TokenSource(Settings settings)
    : settings_(std::move(settings)), current_(settings_.token) {}

std::string TokenSource::token(Clock::time_point now) {
  std::lock_guard lock(mu_);
  if (settings_.token_file.empty()) {
    return current_;
  }
  // A static token is used first; the file takes over at the first refresh.
  const bool due = force_ || (read_at_ && now - *read_at_ >= settings_.period) ||
                   (!read_at_ && current_.empty());
  if (due) {
    if (auto content = read_file(settings_.token_file)) {
      current_ = trim(*content);
    }
    force_ = false;
    read_at_ = now;
  } else if (!read_at_) {
    read_at_ = now;
  }
  return current_;
}

bool TokenSource::invalidate() {
  std::lock_guard lock(mu_);
  if (settings_.token_file.empty()) {
    return false;
  }
  force_ = true;
  return true;
}

}  // namespace va::k8s
