#include "config/overrides.hpp"

#include <CLI/CLI.hpp>
#include <array>
#include <cctype>
#include <optional>
#include <utility>

#include "core/duration.hpp"

namespace va::config {
namespace {

constexpr std::string_view kEnvPrefix = "VLLM_AUTOSCALER_";

// The settings that have a flag (--idle-timeout) and a variable (VLLM_AUTOSCALER_IDLE_TIMEOUT).
constexpr std::array<std::string_view, 13> kOverridable{
    "listen",        "admin-listen",   "threads",        "log-level",    "log-format",
    "api-key-file",  "upstream",       "model",          "idle-timeout", "wake-timeout",
    "k8s-namespace", "k8s-deployment", "process-command"};

constexpr std::array<std::string_view, 7> kBackendShorthands{
    "upstream",      "model",          "idle-timeout",   "wake-timeout",
    "k8s-namespace", "k8s-deployment", "process-command"};

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

}  // namespace

std::string env_name(std::string_view flag) {
  std::string name(kEnvPrefix);
  for (char c : flag) {
    name += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return name;
}

std::string help_footer() {
  return "Each setting flag can also come from the environment: " + env_name("idle-timeout") +
         " for --idle-timeout, and so on (" + env_name("model") + " is comma-separated). " +
         env_name("config") +
         " names the config file.\nPrecedence: flags > environment > YAML file > defaults.";
}

void add_override_flags(CLI::App& app, FlagValues& flags) {
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
    CLI::Option* option = flag == "model" ? app.add_option(name, flags.models, std::string(h.text))
                                          : app.add_option(name, flags.values[std::string(flag)],
                                                           std::string(h.text));
    option->type_name(std::string(h.type));
    if (flag == "model") {
      option->allow_extra_args(false);  // `--model a b` is a mistake, not two models
    }
    flags.options[std::string(flag)] = option;
  }
}

void FlagValues::record_given() {
  for (const auto& [name, option] : options) {
    if (option->count() > 0) {
      given.insert(name);
    }
  }
}

Overrides collect_overrides(const FlagValues& flags, const Env& env, Problems& problems) {
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
    if (flags.given.contains(std::string(flag))) {
      overrides[std::string(flag)] = Override{
          .values = flag == "model" ? flags.models
                                    : std::vector<std::string>{flags.values.at(std::string(flag))},
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
  return overrides;
}

namespace {

// Writes overrides into the config, recording where each value came from.
class Applier {
 public:
  Applier(const Overrides& o, Origins& origins, Problems& problems)
      : o_(o), origins_(origins), problems_(problems) {}

  const Override* find(std::string_view flag) const {
    const auto it = o_.find(flag);
    return it == o_.end() ? nullptr : &it->second;
  }

  void set_origin(const std::string& path, const Override& from) {
    origins_.set(path, from.source);
  }

  void problem(const std::string& path, std::string_view message) { problems_.add(path, message); }

  void set_string(std::string_view flag, const std::string& path, std::string& out) {
    if (const Override* from = find(flag)) {
      out = from->value();
      set_origin(path, *from);
    }
  }

  template <typename Int>
  void set_number(std::string_view flag, const std::string& path, Int& out) {
    if (const Override* from = find(flag)) {
      if (auto error = parse_number(from->value(), out)) {
        problem(from->source, *error);
      }
      set_origin(path, *from);
    }
  }

  void set_duration(std::string_view flag, const std::string& path, Duration& out) {
    if (const Override* from = find(flag)) {
      if (auto d = parse_duration(from->value())) {
        out = *d;
      } else {
        problem(from->source, "bad duration " + in_quotes(from->value()) + " (use ms, s, m or h)");
      }
      set_origin(path, *from);
    }
  }

 private:
  const Overrides& o_;
  Origins& origins_;
  Problems& problems_;
};

void apply_top_level(Applier& a, Config& c) {
  a.set_string("listen", "listen", c.listen);
  a.set_string("admin-listen", "admin_listen", c.admin_listen);
  a.set_string("log-level", "log.level", c.log.level);
  a.set_string("log-format", "log.format", c.log.format);
  a.set_string("api-key-file", "auth.api_keys_file", c.auth.api_keys_file);
  a.set_number("threads", "threads", c.threads);
}

// The backend the shorthands apply to: the file's only one, or a new default backend when the
// file has none. Null when no shorthand is given, or (a problem) when the file has several.
Backend* shorthand_backend(Applier& a, Config& c) {
  std::vector<std::string> sources;
  for (std::string_view flag : kBackendShorthands) {
    if (const Override* from = a.find(flag)) {
      sources.push_back(from->source);
    }
  }
  if (sources.empty()) {
    return nullptr;
  }
  if (c.backends.size() > 1) {
    a.problem("backends", "shorthand flags need exactly one backend; the config file has " +
                              std::to_string(c.backends.size()) + " (" + join(sources, ", ") + ")");
    return nullptr;
  }
  if (c.backends.empty()) {
    Backend& created = c.backends.emplace_back();
    created.name = "default";
    created.default_ = true;
  }
  return &c.backends.front();
}

// A shorthand that names a scaler replaces the file's scaler of another type whole, so that
// `--process-command` over a kubernetes backend does not leave its deployment behind.
void apply_scaler_shorthands(Applier& a, const std::string& path, Scaler& s) {
  const Override* process = a.find("process-command");
  const Override* deployment = a.find("k8s-deployment");
  if (process != nullptr && deployment != nullptr) {
    a.problem(path, "both " + process->source + " and " + deployment->source +
                        " are set; a backend has one scaler");
    return;
  }
  if (process != nullptr) {
    if (s.type != "process") {
      s = Scaler();
      s.type = "process";
    }
    if (auto words = split_command(process->value())) {
      s.command = std::move(*words);
    } else {
      a.problem(process->source, "unterminated double quote");
    }
    a.set_origin(path + ".command", *process);
    a.set_origin(path + ".type", *process);
  }
  if (deployment != nullptr) {
    if (s.type != "kubernetes") {
      s = Scaler();
      s.type = "kubernetes";
    }
    s.deployment = deployment->value();
    a.set_origin(path + ".deployment", *deployment);
    a.set_origin(path + ".type", *deployment);
  }
  a.set_string("k8s-namespace", path + ".namespace", s.namespace_);
}

}  // namespace

void apply_overrides(const Overrides& o, Config& c, Origins& origins, Problems& problems) {
  Applier a(o, origins, problems);
  apply_top_level(a, c);
  Backend* b = shorthand_backend(a, c);
  if (b == nullptr) {
    return;
  }
  const std::string path = "backends[0]";
  a.set_string("upstream", path + ".upstream", b->upstream);
  if (const Override* from = a.find("model")) {
    b->models = from->values;
    a.set_origin(path + ".models", *from);
  }
  a.set_duration("idle-timeout", path + ".idle_timeout", b->idle_timeout);
  a.set_duration("wake-timeout", path + ".wake_timeout", b->wake_timeout);
  apply_scaler_shorthands(a, path + ".scaler", b->scaler);
}

}  // namespace va::config
