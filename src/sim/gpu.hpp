#pragma once
// vllm-sim's simulated GPU: sims given the same --gpu name share one memory budget across
// processes. The budget is a small text file, <dir>/<name>, one "PID GIB" line per sim, read and
// rewritten under flock(2); lines of dead PIDs are ignored (a killed sim frees its memory, as a
// dead process frees its CUDA memory). Not thread-safe: the sim calls it from its one thread.
#include <optional>
#include <string>

namespace va::sim {

class GpuBudget {
 public:
  struct Settings {
    std::string name;  // empty: no simulated GPU, every claim succeeds
    std::string dir;
    double total_gib = 80;
  };

  explicit GpuBudget(Settings settings) : settings_(std::move(settings)) {}
  ~GpuBudget() { release(); }
  GpuBudget(const GpuBudget&) = delete;
  GpuBudget& operator=(const GpuBudget&) = delete;

  // Sets this process's use to `gib` if the other live sims leave room for it. nullopt: done;
  // otherwise PyTorch's "CUDA out of memory" message, and this process's use is unchanged.
  std::optional<std::string> claim(double gib);
  // Removes this process's line (its use becomes 0). Errors are ignored: the PID dies soon.
  void release();
  double used() const { return used_; }

 private:
  Settings settings_;
  double used_ = 0;
};

}  // namespace va::sim
