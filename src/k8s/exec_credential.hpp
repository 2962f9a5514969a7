#pragma once
// kubeconfig `exec` credential plugins (client-go's plugin/pkg/client/auth/exec): the command runs
// without a shell or a terminal, with KUBERNETES_EXEC_INFO in its environment, and prints an
// ExecCredential whose status.token is our bearer token until status.expirationTimestamp (or,
// without one, until the API server answers 401). Client certificates from a plugin are not
// supported: the TLS context is made once, at startup.
// The rules followed are client-go's (plugin/pkg/client/auth/exec).
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/errors.hpp"
#include "core/net.hpp"
#include "k8s/config.hpp"

namespace va::k8s {

struct ExecCredential {
  std::string token;
  std::optional<std::chrono::system_clock::time_point> expires;  // none: valid until a 401
};

// The KUBERNETES_EXEC_INFO value: {"apiVersion":…,"kind":"ExecCredential","spec":{"interactive":
// false}}, with spec.cluster (server, tls-server-name, insecure-skip-tls-verify,
// certificate-authority-data) when exec.provide_cluster_info.
std::string exec_info(const ExecConfig& exec, const ClusterConfig& cluster);

// The plugin's stdout as an ExecCredential of `api_version`. errc::scaler_error saying what is
// wrong, prefixed by `who`. Of the output it quotes only kind, apiVersion and
// status.expirationTimestamp, and none of them when it holds the token.
outcome<ExecCredential> parse_exec_credential(std::string_view json, std::string_view api_version,
                                              std::string_view who);

// RFC 3339 as Go's time.RFC3339 reads it ("2024-05-01T13:00:00Z", "…T15:00:00.25+02:00").
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view s);

// Runs the plugin once on the calling coroutine's executor: posix_spawnp (PATH search for a bare
// name), stdin /dev/null, no descriptor of ours but stdout/stderr pipes, its own process group.
// stderr lines are logged (and the last one kept for the error); the process group is killed
// after `timeout`. Failures name the command: errc::scaler_unavailable for a non-zero exit, a
// signal or the timeout (worth retrying), errc::scaler_error when it cannot be started (with the
// installHint) or its output is unusable.
task<outcome<ExecCredential>> run_exec_plugin(ExecConfig exec, std::string exec_info,
                                              std::chrono::milliseconds timeout);

// The bearer token from an exec plugin, cached until its expiry (less `expiry_margin`) or until
// invalidate(). Concurrent token() calls while the plugin runs share that run; a failed run is
// not cached (the next call runs the plugin again).
// Thread-safety: token() and invalidate() may be called from coroutines on any thread; the
// plugin runs in a coroutine of its own on `ex` that outlives this object if need be.
class ExecTokenSource {
 public:
  struct Settings {
    ExecConfig exec;
    std::string exec_info;  // see exec_info()
    std::string source;     // where the config came from, prefixed to failures
    std::chrono::milliseconds timeout = std::chrono::seconds(30);
    std::chrono::seconds expiry_margin = std::chrono::seconds(10);
  };
  ExecTokenSource(Settings settings, Executor ex);
  ~ExecTokenSource();
  ExecTokenSource(const ExecTokenSource&) = delete;
  ExecTokenSource& operator=(const ExecTokenSource&) = delete;

  // The cached token, or the one from a (shared) run of the plugin. Cancellable: a cancelled
  // caller stops waiting (errc::scaler_error) while the run goes on for the others.
  task<outcome<std::string>> token();
  // The API server refused `token` (401): the next token() runs the plugin again, unless another
  // caller has already replaced that token.
  void invalidate(const std::string& token);

 private:
  struct State;
  static task<void> run(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace va::k8s
