#pragma once
// Where the Kubernetes API is and how to authenticate to it: from a kubeconfig (as kubectl reads
// it) or from the pod's service account (as client-go's rest.InClusterConfig). Both run once at
// startup and throw ConfigError saying what is unusable; the environment is passed in.
// The rules followed are client-go's (rest.InClusterConfig, tools/clientcmd).
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/net.hpp"

namespace va::k8s {

using Env = std::map<std::string, std::string>;

inline constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

inline constexpr const char* kExecApiV1 = "client.authentication.k8s.io/v1";
inline constexpr const char* kExecApiV1beta1 = "client.authentication.k8s.io/v1beta1";

// users[].user.exec: a credential plugin that prints a bearer token (k8s/exec_credential.hpp).
struct ExecConfig {
  std::string api_version;  // kExecApiV1 or kExecApiV1beta1
  // A name looked up in PATH, or a path: one with a '/' that is relative was resolved against the
  // kubeconfig file's directory (as client-go does).
  std::string command;
  std::vector<std::string> args;
  std::vector<std::pair<std::string, std::string>> env;  // added to (or replacing in) ours
  std::string interactive_mode;  // "Never" or "IfAvailable"; the plugin never gets a terminal
  bool provide_cluster_info = false;
  std::string install_hint;  // shown when the command is not found
};

struct ClusterConfig {
  std::string server;       // the server URL as configured (spec.cluster.server for exec plugins)
  std::string host;         // name or address, without brackets
  std::string port;         // "443" when the server URL has none
  std::string path_prefix;  // path of the server URL without the trailing '/', usually empty
  std::string server_name;  // SNI (names only) and the name or IP the certificate must match
  std::string ca_pem;       // empty: the system's trust store
  bool insecure_skip_tls_verify = false;
  std::string token;       // static bearer token (used first when token_file is also set)
  std::string token_file;  // re-read by TokenSource
  std::string client_cert_pem, client_key_pem;
  std::optional<ExecConfig> exec;  // the bearer token comes from this plugin (no token/token_file)
  std::string namespace_ = "default";
  std::string
      source;  // where this came from ("kubeconfig /x, context dev", "in-cluster"), for logs

  // "host:port" as sent in Host, with brackets around an IPv6 address.
  std::string host_header() const;
};

// Reads the kubeconfig files `paths` (which files to read is the config loader's choice, as
// kubectl makes it), merged as kubectl does: the first file that sets current-context decides
// it, and for each named context, cluster and user the first file that defines the name wins; a
// missing file in a list of several is skipped. Relative paths resolve against the directory of
// the file holding them; *-data fields win over paths. `exec` plugins are checked here and run
// by Client; an exec with interactiveMode Always, with token/tokenFile, or an `auth-provider`
// user is a ConfigError.
ClusterConfig load_kubeconfig_files(const std::vector<std::string>& paths);

// KUBERNETES_SERVICE_HOST/PORT, root/ca.crt, root/token (kept as token_file, re-read) and
// root/namespace (whitespace trimmed; "default" when missing).
ClusterConfig in_cluster(const Env& env, const std::string& root = kServiceAccountDir);

// Encodes base64 (standard alphabet, with padding).
std::string base64_encode(std::string_view in);
// Decodes base64 (standard alphabet, padding optional, whitespace ignored); nullopt if invalid.
std::optional<std::string> base64_decode(std::string_view in);

// The bearer token to send: the static token until token_file has been read, then the file's
// content (trimmed), re-read when older than `period` or after invalidate() (a 401), as
// client-go's cached file token source. A read failure keeps the last good token.
// Thread-safety: all members may be called from any thread (mutex).
class TokenSource {
 public:
  struct Settings {
    std::string token;
    std::string token_file;
    std::chrono::seconds period = std::chrono::seconds(60);
  };
  explicit TokenSource(Settings settings);

  // Empty if there is no token at all.
  std::string token(Clock::time_point now = Clock::now());
  // Forces a re-read of token_file on the next token() call. Returns false when there is no file
  // to re-read (retrying after a 401 would change nothing).
  bool invalidate();
  bool has_file() const { return !settings_.token_file.empty(); }

 private:
  Settings settings_;
  std::mutex mu_;
  std::string current_;
  std::optional<Clock::time_point> read_at_;
  bool force_ = false;
};

}  // namespace va::k8s
