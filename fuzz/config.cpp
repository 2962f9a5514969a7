// Fuzz target: the config loader. The input is the YAML file. Whatever it holds, load() either
// returns a valid config or throws ConfigError naming the problems: any other exception or a crash
// is a finding. A config that loads is printed (--print-config) and loaded again: the printed form
// must load, and print the same.
#include <cstdint>
#include <string>

#include "config/loader.hpp"
#include "core/log.hpp"
#include "fuzz/check.hpp"
#include "fuzz/temp_file.hpp"

namespace {

const std::map<std::string, std::string> kEnv = {{"HOME", "/nonexistent"}, {"FUZZ", "value"}};

std::optional<va::config::Config> load(const std::string& path) {
  const char* argv[] = {"vllm-autoscaler", "--config", path.c_str()};
  try {
    return va::config::load(3, argv, kEnv).config;
  } catch (const va::ConfigError& e) {
    VA_FUZZ_CHECK(!e.problems().empty(), "a ConfigError with no problem in it");
    return std::nullopt;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static va::fuzz::TempFile file("config.yaml");
  const auto c = load(file.write({reinterpret_cast<const char*>(data), size}));
  if (!c) {
    return 0;
  }
  const auto printed = va::config::to_yaml(*c);
  const auto again = load(file.write(printed));
  VA_FUZZ_CHECK(again.has_value(), "the printed config does not load:\n" + printed);
  VA_FUZZ_CHECK(va::config::to_yaml(*again) == printed, "the printed config changes on a reload");
  return 0;
}
