#pragma once
// Builds the one Config the process runs with, from (highest precedence first) command-line
// flags, VLLM_AUTOSCALER_* environment variables, the YAML file, and the defaults in config.hpp.
// Called once by main before anything else starts; none of these functions touch global state
// (the environment is passed in), so tests call them freely.
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace va::config {

enum class Action { run, print_config, check_config, version, help };

struct Loaded {
  Config config;
  Action action = Action::run;
  std::string help_text;  // filled for Action::help
};

// Parses argv (argv[0] is the program name), reads the --config (or VLLM_AUTOSCALER_CONFIG) YAML
// file, expands ${VAR} and ${VAR:-default} in YAML scalars from `env`, applies VLLM_AUTOSCALER_*
// variables and flags, reads auth.api_keys_file, fills defaults and validates. Each kubernetes
// backend's scaler.cluster records the kubeconfig or service account it will use
// (config/kubeconfig.hpp); for Action::check_config that is read and checked too.
// Throws ConfigError listing every problem found, each prefixed by its key path. For
// Action::help and Action::version nothing but the flags is read and `config` holds defaults.
// For Action::print_config and Action::check_config the caller prints; the config is valid.
Loaded load(int argc, const char* const* argv, const std::map<std::string, std::string>& env);

// The process environment ("NAME=value" strings, as main's envp or `environ`) as a map.
std::map<std::string, std::string> environment_map(char** envp);

// The effective configuration as YAML with the input's keys, for --print-config. Secrets are
// replaced by "***": auth.api_keys entries, and health headers and scaler env variables whose
// name is Authorization or contains "key", "token", "secret" or "password" (case-insensitive).
std::string to_yaml(const Config& c);

// A process command as it may be shown (logs, --print-config): the value of every flag whose name
// contains "key", "token", "secret", "password" or "authorization" ("--api-key X",
// "--api-key=X") replaced by "***".
std::vector<std::string> mask_command_secrets(const std::vector<std::string>& command);

// A listen address: "host:port", IPv6 as "[::1]:8080"; port 0..65535 (0: the kernel picks).
// `host` is without brackets, ready for asio::ip::make_address or a resolver.
struct Endpoint {
  std::string host;
  unsigned short port = 0;
};
std::optional<Endpoint> parse_endpoint(std::string_view s);

// An upstream URL as the loader accepts it: http://host[:port][/], port defaulting to 80.
// `host` is without brackets for IPv6 literals.
std::optional<Endpoint> parse_upstream(std::string_view s);

}  // namespace va::config
