#pragma once
// The only code that knows every module: wiring, signals, start and stop order.
#include <memory>

#include "config/config.hpp"

namespace va::app {

class App {
 public:
  explicit App(config::Config config);
  ~App();
  // Runs until SIGTERM/SIGINT and a drained shutdown. Returns the process exit code.
  int run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace va::app
