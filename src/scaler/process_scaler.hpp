#pragma once
// Runs the backend as a local child process (README.md, "In front of a real `vllm serve`"): started
// in its own process group when woken, stopped with SIGTERM then SIGKILL after `stop_timeout`, its
// exit noticed at once (pidfd), its stdout/stderr logged line by line with the backend's name.
//
// Threading: all members are used on the executor given to the constructor (the Backend's
// controller's).
#include <sys/types.h>

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "scaler/scaler.hpp"

namespace va::scaler {

class ProcessScaler final : public Scaler {
 public:
  struct Settings {
    std::string backend;
    std::vector<std::string> command;
    std::map<std::string, std::string> env;
    config::Duration stop_timeout = std::chrono::seconds(30);
  };

  ProcessScaler(Settings settings, Executor ex);
  ~ProcessScaler() override;

  task<outcome<void>> scale_to(int replicas, std::string cause) override;
  task<outcome<Observed>> observe() override;
  task<void> shutdown() override;

 private:
  outcome<void> start();
  task<void> stop();
  task<void> wait_exit(pid_t pid, int pidfd);
  task<void> read_output(int fd, std::string stream_name);
  void on_exit(pid_t pid, int status);

  Settings settings_;
  Executor ex_;
  int desired_ = 0;
  pid_t pid_ = -1;           // the running child, or -1
  std::string exit_reason_;  // set when the child exited while desired
  std::string last_stderr_;
  Timer exited_;  // cancelled when the child exits
};

}  // namespace va::scaler
