#include "core/config_error.hpp"

#include <utility>

namespace va {
namespace {

std::string lines(const std::vector<std::string>& problems) {
  std::string out;
  for (const std::string& p : problems) {
    out += out.empty() ? p : "\n" + p;
  }
  return out;
}

}  // namespace

ConfigError::ConfigError(std::vector<std::string> problems)
    : std::runtime_error(lines(problems)), problems_(std::move(problems)) {}

}  // namespace va
