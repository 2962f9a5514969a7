#pragma once
// Startup configuration that cannot be used (STYLE.md, errors, tier 2): thrown with every problem
// found, each prefixed by its key path ("backends[0].idle_timeout: bad duration \"5 minutes\"").
// Thrown by config::load, the Kubernetes cluster loaders (k8s/config.hpp) and make_scaler; main
// prints it and exits 2.
#include <stdexcept>
#include <string>
#include <vector>

namespace va {

class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

}  // namespace va
