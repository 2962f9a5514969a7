// load(): the command line, then the YAML file (config/yaml_reader.cpp), the flags and
// environment over it (config/overrides.cpp), the API keys, and validation (config/validate.cpp).
#include "config/loader.hpp"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <sstream>
#include <utility>

#include "config/kubeconfig.hpp"
#include "config/overrides.hpp"
#include "config/problems.hpp"
#include "config/text.hpp"
#include "config/validate.hpp"
#include "config/yaml_reader.hpp"

namespace va::config {
namespace {

// What the command line asked for, besides the overridable settings.
struct CommandLine {
  std::string config_file;
  std::string print_file;  // --print-config FILE and --check-config FILE name the file too
  std::string check_file;
  bool version = false;
  CLI::Option* print_config = nullptr;
  CLI::Option* check_config = nullptr;
  FlagValues flags;
};

void add_flags(CLI::App& app, CommandLine& cl) {
  app.name("vllm-autoscaler");
  app.footer(help_footer());
  app.add_option("--config", cl.config_file, "YAML config file")->type_name("FILE");
  cl.print_config =
      app.add_option("--print-config", cl.print_file,
                     "Print the effective config (secrets masked) and exit; FILE as --config")
          ->expected(0, 1)
          ->type_name("[FILE]");
  cl.check_config =
      app.add_option("--check-config", cl.check_file,
                     "Validate the config, list every problem, exit 0 or 2; FILE as --config")
          ->expected(0, 1)
          ->type_name("[FILE]");
  app.add_flag("--version", cl.version, "Print the version and exit");
  add_override_flags(app, cl.flags);
}

// Parses argv into `cl` and sets loaded.action. False when nothing more is to be read (--help,
// --version).
bool parse_command_line(int argc, const char* const* argv, CommandLine& cl, Loaded& loaded) {
  CLI::App app{
      "vllm-autoscaler: an OpenAI-compatible reverse proxy that scales vLLM to zero "
      "when idle and wakes it on the first request."};
  add_flags(app, cl);
  std::vector<std::string> args;
  for (int i = argc - 1; i > 0; --i) {
    args.emplace_back(argv[i]);
  }
  try {
    app.parse(std::move(args));
  } catch (const CLI::CallForHelp&) {
    loaded.action = Action::help;
    loaded.help_text = app.help();
    return false;
  } catch (const CLI::ParseError& e) {
    throw ConfigError({std::string("flags: ") + e.what() + " (see --help)"});
  }
  cl.flags.record_given();  // the options go with `app`
  if (cl.version) {
    loaded.action = Action::version;
    return false;
  }
  loaded.action = cl.print_config->count() > 0   ? Action::print_config
                  : cl.check_config->count() > 0 ? Action::check_config
                                                 : Action::run;
  return true;
}

// The config file: named by --config, --print-config FILE or --check-config FILE (one file, if
// several name one), else by VLLM_AUTOSCALER_CONFIG; empty for none.
std::string config_file(const CommandLine& cl, const Env& env) {
  std::string file = cl.config_file;
  for (const std::string* named : {&cl.print_file, &cl.check_file}) {
    if (named->empty()) {
      continue;
    }
    if (!file.empty() && file != *named) {
      throw ConfigError({"flags: two config files named (" + in_quotes(file) + " and " +
                         in_quotes(*named) + ")"});
    }
    file = *named;
  }
  if (file.empty()) {
    if (const auto it = env.find(env_name("config")); it != env.end()) {
      file = it->second;
    }
  }
  return file;
}

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

// Where each kubernetes backend (and the coordination) finds its cluster, so that make_scaler
// reads no environment.
void resolve_clusters(Config& c, const Env& env) {
  if (c.coordination.type == "kubernetes") {
    Scaler s;
    s.kubeconfig = c.coordination.kubeconfig;
    c.coordination.cluster = resolve_cluster_source(s, env);
  }
  for (Backend& b : c.backends) {
    if (b.scaler.type == "kubernetes") {
      b.scaler.cluster = resolve_cluster_source(b.scaler, env);
    }
  }
}

// --check-config: each kubernetes backend's kubeconfig or service account is read, as
// make_scaler reads it at startup.
void check_clusters(const Config& c, Problems& problems) {
  if (c.coordination.type == "kubernetes") {
    try {
      load_cluster(c.coordination.cluster, "coordination.kubeconfig");
    } catch (const ConfigError& e) {
      problems.extend(e.problems());
    }
  }
  for (std::size_t i = 0; i < c.backends.size(); ++i) {
    const Scaler& s = c.backends[i].scaler;
    if (s.type != "kubernetes") {
      continue;
    }
    std::string shown = element("backends", i) + ".scaler.kubeconfig";
    if (!s.cluster.from.empty()) {
      shown += " (from " + s.cluster.from + ")";
    }
    try {
      load_cluster(s.cluster, shown);
    } catch (const ConfigError& e) {
      problems.extend(e.problems());
    }
  }
}

// $HOSTNAME, else gethostname(): in a pod, the pod's name.
std::string hostname(const Env& env) {
  if (const auto it = env.find("HOSTNAME"); it != env.end() && !it->second.empty()) {
    return it->second;
  }
  char name[256] = {};
  return ::gethostname(name, sizeof name - 1) == 0 ? std::string(name) : std::string();
}

}  // namespace

Loaded load(int argc, const char* const* argv, const std::map<std::string, std::string>& env) {
  Loaded loaded;
  CommandLine cl;
  if (!parse_command_line(argc, argv, cl, loaded)) {
    return loaded;
  }
  const std::string file = config_file(cl, env);
  Problems problems;
  const Overrides overrides = collect_overrides(cl.flags, env, problems);
  Config& c = loaded.config;
  if (!file.empty() && !read_yaml_file(file, env, problems, c)) {
    throw ConfigError(problems.list());
  }
  Origins origins;
  apply_overrides(overrides, c, origins, problems);
  load_keys(c.auth, origins, problems);
  if (c.coordination.identity.empty()) {
    c.coordination.identity = hostname(env);
  }
  validate(c, origins, problems);
  resolve_clusters(c, env);
  if (loaded.action == Action::check_config) {
    check_clusters(c, problems);
  }
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

}  // namespace va::config
