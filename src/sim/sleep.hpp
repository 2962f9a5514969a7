#pragma once
// vllm-sim's sleep mode, the engine's side: what is on the (simulated) GPU, as vLLM's CuMem
// allocator tracks it by tag. The routes that change it are in sleep.cpp (Server members).
// Single-threaded, like the rest of the sim.
#include <string_view>

namespace va::sim {

class SleepState {
 public:
  // level 1 offloads the weights, level 2 discards them; both discard the KV cache.
  void fall_asleep(int level) {
    level_ = level;
    weights_ = false;
    kv_cache_ = false;
    weights_valid_ = level == 1;
  }
  // Restores the tags named (both when neither is). Returns whether that made it fully awake.
  bool wake(bool weights, bool kv_cache) {
    weights_ = weights_ || weights;
    kv_cache_ = kv_cache_ || kv_cache;
    if (!sleeping()) {
      level_ = 0;
      return true;
    }
    return false;
  }
  // collective_rpc reload_weights: the weights are back on the GPU but hold garbage after a
  // level-2 sleep until this reloads them.
  bool reload_weights() {
    if (!weights_) {
      return false;
    }
    weights_valid_ = true;
    return true;
  }

  // true until every tag is restored (vLLM's /is_sleeping).
  bool sleeping() const { return !weights_ || !kv_cache_; }
  int level() const { return level_; }
  bool weights_on_gpu() const { return weights_; }
  // Whether a generation would be right: awake, with the weights reloaded after level 2.
  bool can_serve() const { return !sleeping() && weights_valid_; }
  // vllm:engine_sleep_state's sleep_state label of the current state.
  std::string_view label() const {
    return level_ == 0 ? "awake" : level_ == 1 ? "weights_offloaded" : "discard_all";
  }

 private:
  int level_ = 0;  // the level slept at, until fully awake again
  bool weights_ = true;
  bool kv_cache_ = true;
  bool weights_valid_ = true;
};

}  // namespace va::sim
