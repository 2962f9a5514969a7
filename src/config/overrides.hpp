#pragma once
// The settings that may also come from a flag (--idle-timeout) or an environment variable
// (VLLM_AUTOSCALER_IDLE_TIMEOUT), flags winning, both over the YAML file; the single-backend
// shorthands among them build or change backends[0]. Part of config/loader.cpp's load(); not
// for use outside src/config.
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "config/problems.hpp"
#include "config/text.hpp"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace va::config {

// "idle-timeout" -> "VLLM_AUTOSCALER_IDLE_TIMEOUT".
std::string env_name(std::string_view flag);

// What the command line gave for the overridable settings, as CLI11 fills it: the object must
// stay where it is between add_override_flags() and the parse.
struct FlagValues {
  std::map<std::string, std::string> values;
  std::vector<std::string> models;  // --model, repeatable
  // Valid only while the CLI::App lives: record_given() copies what they say into `given`, which
  // collect_overrides() reads, before the App goes.
  std::map<std::string, CLI::Option*> options;
  std::set<std::string> given;  // the flags on the command line
  void record_given();
};

// Registers --listen … --process-command, with their help, to fill `flags`.
void add_override_flags(CLI::App& app, FlagValues& flags);

// The --help text after the flags: the environment variables and the precedence.
std::string help_footer();

// One overridden setting: its values (several only for --model) and where they came from, as
// shown in problems ("--listen" or "VLLM_AUTOSCALER_LISTEN").
struct Override {
  std::vector<std::string> values;
  std::string source;
  const std::string& value() const { return values.front(); }
};

using Overrides = std::map<std::string, Override, std::less<>>;

// The parsed flags over the VLLM_AUTOSCALER_* variables of `env`; a value that is not UTF-8 is
// a problem named by its source.
Overrides collect_overrides(const FlagValues& flags, const Env& env, Problems& problems);

// Writes the overrides into `c` and records their sources in `origins`.
void apply_overrides(const Overrides& o, Config& c, Origins& origins, Problems& problems);

}  // namespace va::config
