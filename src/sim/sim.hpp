#pragma once
// vllm-sim: a GPU-free stand-in for vLLM's OpenAI-compatible server, for demos, tests and
// benchmarks. It behaves like vLLM wherever a proxy can tell: it does not listen until the
// "model" has loaded, streams one SSE event per token with real timers, aborts a generation when
// its client leaves, and exports vLLM's metric names. Single-threaded: everything runs on one
// io_context thread, so the counters need no locking.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace va::sim {

struct Settings {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8000;  // 0: the kernel picks one; the startup log line says which
  std::string model = "sim-model";
  std::chrono::nanoseconds startup_delay{0};
  std::chrono::nanoseconds ttft{0};
  std::chrono::nanoseconds itl = std::chrono::milliseconds(10);
  // uvicorn closes a keep-alive connection idle this long between requests (vLLM: 5 s).
  std::chrono::nanoseconds keep_alive_timeout = std::chrono::seconds(5);
  // On SIGTERM: stop listening at once, go on serving open connections for this long, then exit
  // 0 (like vLLM's --shutdown-timeout, but always the full time, so a stop visibly takes time).
  // 0: exit at once.
  std::chrono::nanoseconds shutdown_delay{0};
  int max_tokens = 16;  // a request's max_tokens / max_completion_tokens overrides it
  // The prefix cache (prefix_cache.hpp): so many blocks of block_size tokens (0: none), and the
  // prefill time of each prompt token not found in it, added to the time to first token.
  std::size_t prefix_cache_blocks = 4096;
  int block_size = 16;
  std::chrono::nanoseconds prefill_per_token{0};
  std::vector<std::string> api_keys;  // empty: no authentication
  // Fault knobs (0 / nullopt = off).
  // exit(1) once the Nth /v1/completions or /v1/chat/completions response (4xx included) has
  // been written.
  int exit_after = 0;
  std::optional<int> fail_at_start;  // exit with this status after the startup delay
  std::string fail_message;          // ... printing this to stderr first
  int die_mid_stream_after = 0;      // exit(1) once a stream has written this many tokens
  bool event_timestamps = false;     // add "sim_sent_ns" (CLOCK_REALTIME) to every SSE chunk
  bool access_log = true;            // one short stdout line per request
  // Sleep mode (sleep.cpp). dev_mode: VLLM_SERVER_DEV_MODE=1 (read by main()), which adds the
  // routes; enable_sleep_mode: --enable-sleep-mode, without which /sleep and /wake_up answer 400.
  bool dev_mode = false;
  bool enable_sleep_mode = false;
  std::chrono::nanoseconds sleep_delay{0};
  std::chrono::nanoseconds sleep_delay_l2{0};
  std::chrono::nanoseconds wake_delay{0};
  std::chrono::nanoseconds wake_delay_l2{0};
  // The simulated GPU (gpu.hpp): sims with the same name share gpu_memory_gib; this one claims
  // model_memory_gib while awake, 2 % of it while asleep. Empty name: no budget.
  std::string gpu;
  std::string gpu_dir;  // where the budget files live; main() picks the default
  double gpu_memory_gib = 80;
  double model_memory_gib = 0;
};

// Parses a duration such as "250ms", "5s", "1.5s", "100us", "2m" or "0". Returns nullopt when
// the text is not one.
std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text);

// Runs the simulator until SIGTERM/SIGINT (returns 0) or a fault knob ends the process.
int run(const Settings& settings);

// Command line entry point: parses the flags (exit 2 on a bad one) and calls run().
int main(int argc, char** argv);

}  // namespace va::sim
