// vllm-sim's entry points: the flags, then run() (the server is sim/server.hpp).
#include "sim/sim.hpp"

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/log.hpp"
#include "sim/server.hpp"

namespace va::sim {

namespace {

// The flags that are not Settings fields as they are: durations as text (checked, then parsed
// once CLI11 is done) and --fail-at-start (-1: unset).
struct RawFlags {
  std::string startup_delay = "0", ttft = "0ms", itl = "10ms", keep_alive = "5s",
              shutdown_delay = "0", prefill_per_token = "0", sleep_delay = "0", wake_delay = "0";
  std::string sleep_delay_l2, wake_delay_l2;  // empty: as level 1
  int fail_at_start = -1;
};

// Sleep mode and the simulated GPU.
void add_sleep_flags(CLI::App& app, Settings& s, RawFlags& raw, const CLI::Validator& duration) {
  app.add_flag("--enable-sleep-mode", s.enable_sleep_mode,
               "Allow /sleep and /wake_up (the routes exist only with VLLM_SERVER_DEV_MODE=1)");
  app.add_option("--sleep-delay", raw.sleep_delay, "Time /sleep takes (level 1)")
      ->check(duration)
      ->capture_default_str();
  app.add_option("--sleep-delay-l2", raw.sleep_delay_l2,
                 "Time /sleep?level=2 takes (default: --sleep-delay)")
      ->check(duration);
  app.add_option("--wake-delay", raw.wake_delay, "Time each /wake_up takes after level 1")
      ->check(duration)
      ->capture_default_str();
  app.add_option("--wake-delay-l2", raw.wake_delay_l2,
                 "Time each /wake_up takes after level 2 (default: --wake-delay)")
      ->check(duration);
  app.add_option("--gpu", s.gpu,
                 "Simulated GPU name: sims naming the same GPU share its memory (default: none)")
      ->check(CLI::Validator(
          [](std::string& v) {
            return v.find('/') == std::string::npos && v != "." && v != ".."
                       ? std::string()
                       : "a GPU name is a file name: " + v;
          },
          "NAME"));
  app.add_option("--gpu-memory-gib", s.gpu_memory_gib, "The simulated GPU's memory")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--model-memory-gib", s.model_memory_gib,
                 "GPU memory the model holds awake (2 % of it asleep); start and /wake_up fail "
                 "with CUDA out of memory without room")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--gpu-dir", s.gpu_dir,
                 "Directory of the GPU budget files (default: $XDG_RUNTIME_DIR/vllm-sim-gpu, "
                 "else /tmp/vllm-sim-gpu)");
}

// The order of the calls is the order of --help.
void add_flags(CLI::App& app, Settings& s, RawFlags& raw) {
  const auto duration = CLI::Validator(
      [](std::string& v) {
        return parse_duration(v) ? std::string() : "not a duration (e.g. 250ms, 5s): " + v;
      },
      "DURATION");
  app.add_option("--host", s.host, "Address to listen on")->capture_default_str();
  app.add_option("--port", s.port, "Port to listen on (0: the kernel picks)")
      ->capture_default_str();
  app.add_option("--model", s.model, "Served model name")->capture_default_str();
  app.add_option("--startup-delay", raw.startup_delay, "Time before the port listens")
      ->check(duration)
      ->capture_default_str();
  app.add_option("--ttft", raw.ttft, "Time to first token")->check(duration)->capture_default_str();
  app.add_option("--itl", raw.itl, "Inter-token latency")->check(duration)->capture_default_str();
  app.add_option("--keep-alive-timeout", raw.keep_alive, "Idle keep-alive connection timeout")
      ->check(duration)
      ->capture_default_str();
  app.add_option("--shutdown-delay", raw.shutdown_delay,
                 "On SIGTERM stop listening, serve open connections this long, then exit 0")
      ->check(duration)
      ->capture_default_str();
  app.add_option("--max-tokens", s.max_tokens, "Tokens per completion unless the request says")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--prefill-per-token", raw.prefill_per_token,
                 "Time to first token added per prompt token not in the prefix cache")
      ->check(duration)
      ->capture_default_str();
  app.add_option("--prefix-cache-blocks", s.prefix_cache_blocks,
                 "Prefix cache size in blocks (0: no cache)")
      ->capture_default_str();
  app.add_option("--block-size", s.block_size, "Tokens per prefix cache block")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--api-key", s.api_keys,
                 "Require `Authorization: Bearer KEY` on /v1 (repeatable)");
  app.add_option("--exit-after", s.exit_after,
                 "exit(1) after the Nth completion request has been answered")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--fail-at-start", raw.fail_at_start,
                 "After the startup delay, print --fail-message and exit with this status")
      ->check(CLI::Range(0, 255));
  app.add_option("--fail-message", s.fail_message, "stderr message for --fail-at-start");
  app.add_option("--die-mid-stream-after", s.die_mid_stream_after,
                 "exit(1) after a stream has sent N tokens")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--event-timestamps", s.event_timestamps,
               "Add sim_sent_ns (CLOCK_REALTIME) to every SSE chunk");
  app.add_flag("!--disable-access-log", s.access_log, "Do not log each request");
  add_sleep_flags(app, s, raw, duration);
}

// After a successful parse: the validators have accepted every duration.
void apply(const RawFlags& raw, Settings& s) {
  s.startup_delay = *parse_duration(raw.startup_delay);
  s.ttft = *parse_duration(raw.ttft);
  s.itl = *parse_duration(raw.itl);
  s.keep_alive_timeout = *parse_duration(raw.keep_alive);
  s.shutdown_delay = *parse_duration(raw.shutdown_delay);
  s.prefill_per_token = *parse_duration(raw.prefill_per_token);
  s.sleep_delay = *parse_duration(raw.sleep_delay);
  s.sleep_delay_l2 =
      raw.sleep_delay_l2.empty() ? s.sleep_delay : *parse_duration(raw.sleep_delay_l2);
  s.wake_delay = *parse_duration(raw.wake_delay);
  s.wake_delay_l2 = raw.wake_delay_l2.empty() ? s.wake_delay : *parse_duration(raw.wake_delay_l2);
  if (raw.fail_at_start >= 0) {
    s.fail_at_start = raw.fail_at_start;
  }
}

// What vLLM reads from the environment, and the defaults that depend on it.
void apply_environment(Settings& s) {
  const char* dev = std::getenv("VLLM_SERVER_DEV_MODE");
  s.dev_mode = dev != nullptr && std::string_view(dev) == "1";
  if (s.gpu_dir.empty()) {
    const char* runtime = std::getenv("XDG_RUNTIME_DIR");
    s.gpu_dir =
        std::string(runtime != nullptr && *runtime != '\0' ? runtime : "/tmp") + "/vllm-sim-gpu";
  }
}

}  // namespace

int run(const Settings& settings) {
  Server server(settings);
  return server.run();
}

int main(int argc, char** argv) {
  Settings s;
  RawFlags raw;
  CLI::App app{"vllm-sim: a GPU-free stand-in for vLLM's OpenAI-compatible server"};
  add_flags(app, s, raw);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  apply(raw, s);
  apply_environment(s);
  log::init(log::Level::info, log::Format::text);
  return run(s);
}

}  // namespace va::sim
