#pragma once
// The one seam with several implementations (README.md, "Configuration": scaler): how a backend's
// replicas are started and stopped. Readiness is never taken from the scaler alone: the Backend
// also probes health.
//
// Threading: a Scaler belongs to one Backend. scale_to(), observe() and shutdown() are called only
// from that Backend's controller coroutine, one at a time, on the executor passed to make_scaler.
// The change callback may be invoked from that executor at any time.
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "core/errors.hpp"
#include "core/net.hpp"

namespace va::scaler {

struct Observed {
  int desired = 0;     // replicas asked for
  int ready = 0;       // replicas the scaler considers up (the health probe decides the rest)
  bool fatal = false;  // a wake cannot succeed as things are; `reason` says why
  std::string reason;  // human-readable, e.g. "process exited with status 3: CUDA out of memory"
};

class Scaler {
 public:
  virtual ~Scaler() = default;
  // Asks for `replicas`; returns once the request is accepted, not when replicas are ready.
  // `cause` says why ("3 requests held", "idle for 5m"), for the record a scaler keeps (the
  // kubernetes scaler's Events). A failure with errc::scaler_unavailable is worth retrying later
  // (the API is down or overloaded); any other failure will not go away by itself.
  virtual task<outcome<void>> scale_to(int replicas, std::string cause) = 0;
  virtual task<outcome<Observed>> observe() = 0;
  // The proxy is stopping: the process scaler stops what it started; kubernetes leaves the
  // Deployment as it is, for the next proxy to adopt.
  virtual task<void> shutdown() { co_return; }

  // `f` is called when the scaler learns something new (a process exited), so the Backend
  // observes at once instead of at its next poll.
  void on_change(std::function<void()> f) { on_change_ = std::move(f); }

  // What stops this scaler from working as configured, as last checked, one sentence each
  // ("cannot patch apps/deployments/scale \"vllm\" in namespace \"llm\""); none when all is
  // well, and for scalers that check nothing. The proxy is not ready while there is any. Any
  // thread.
  std::vector<std::string> setup_problems() const {
    std::lock_guard lock(setup_mu_);
    return setup_problems_;
  }

 protected:
  void changed() const {
    if (on_change_) {
      on_change_();
    }
  }
  void set_setup_problems(std::vector<std::string> problems) {
    std::lock_guard lock(setup_mu_);
    setup_problems_ = std::move(problems);
  }

 private:
  std::function<void()> on_change_;
  mutable std::mutex setup_mu_;  // guards setup_problems_
  std::vector<std::string> setup_problems_;
};

// Builds the scaler that `backend.scaler.type` names. Throws ConfigError for a scaler
// that cannot be set up.
std::unique_ptr<Scaler> make_scaler(const config::Backend& backend, Executor ex);

}  // namespace va::scaler
