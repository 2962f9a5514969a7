// vllm-sim's entry points: the flags, then run() (the server is sim/server.hpp).
#include "sim/sim.hpp"

#include <CLI/CLI.hpp>
#include <string>

#include "core/log.hpp"
#include "sim/server.hpp"

namespace va::sim {

namespace {

// The flags that are not Settings fields as they are: durations as text (checked, then parsed
// once CLI11 is done) and --fail-at-start (-1: unset).
struct RawFlags {
  std::string startup_delay = "0", ttft = "0ms", itl = "10ms", keep_alive = "5s",
              shutdown_delay = "0", prefill_per_token = "0";
  int fail_at_start = -1;
};

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
}

// After a successful parse: the validators have accepted every duration.
void apply(const RawFlags& raw, Settings& s) {
  s.startup_delay = *parse_duration(raw.startup_delay);
  s.ttft = *parse_duration(raw.ttft);
  s.itl = *parse_duration(raw.itl);
  s.keep_alive_timeout = *parse_duration(raw.keep_alive);
  s.shutdown_delay = *parse_duration(raw.shutdown_delay);
  s.prefill_per_token = *parse_duration(raw.prefill_per_token);
  if (raw.fail_at_start >= 0) {
    s.fail_at_start = raw.fail_at_start;
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
  log::init(log::Level::info, log::Format::text);
  return run(s);
}

}  // namespace va::sim
