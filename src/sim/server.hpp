#pragma once
// vllm-sim's server (private to src/sim). Split by what the code is about:
// - server.cpp: startup (load delay, then listen), accept, sessions, routing, auth, the
//   request-level endpoints (/health, /version, /v1/models, /sim/last-request) and /metrics;
// - generation.cpp: /v1/completions and /v1/chat/completions: validation, the JSON answer, the
//   SSE stream and its chunk writing, aborts on disconnect, and the fault knobs that fire there;
// - sleep.cpp: vLLM's sleep mode (routes with VLLM_SERVER_DEV_MODE=1) and the simulated GPU;
// - EngineState below: what vLLM's engine knows about its requests, read by /metrics.
// Single-threaded: everything runs on ioc_'s one thread, so nothing here is locked.
#include <boost/json.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "core/net.hpp"
#include "sim/gpu.hpp"
#include "sim/prefix_cache.hpp"
#include "sim/sim.hpp"
#include "sim/sleep.hpp"

namespace va::sim {

namespace json = boost::json;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

inline constexpr int kMaxModelLen = 4096;

// One generation request, validated.
struct Generation {
  bool chat = true;
  std::string id;
  std::int64_t created = 0;
  int max_tokens = 0;
  int prompt_tokens = 0;
  std::vector<std::uint64_t> blocks;  // the prompt's full blocks (prefix_cache.hpp)
  std::chrono::nanoseconds ttft{0};   // Settings::ttft plus the prefill of what the cache missed
  bool stream = false;
  bool include_usage = false;
};

// Rejections carry vLLM's error shape; a Generation means "go ahead".
using Validated = std::variant<Generation, Response>;

// The engine's side of the simulation: its request counts, exported under vLLM's metric names.
struct EngineState {
  long running = 0;
  unsigned long finished_stop = 0;
  unsigned long finished_length = 0;
  unsigned long finished_abort = 0;
  unsigned long prompt_tokens_total = 0;
  unsigned long generation_tokens_total = 0;
  unsigned long prefix_cache_queries = 0;  // prompt tokens looked up
  unsigned long prefix_cache_hits = 0;     // of which found
};

// Counts a request in num_requests_running for as long as it lives.
class Running {
 public:
  explicit Running(long& n) : n_(n) { ++n_; }
  ~Running() { --n_; }
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;

 private:
  long& n_;
};

// Shared by server.cpp and generation.cpp.
task<void> sleep_for(std::chrono::nanoseconds d);
Response make_json(const Request& req, http::status status, std::string body);
// Writes a complete response; returns whether the connection stays open.
task<bool> send(TcpStream& stream, Response res);

class Server {
 public:
  explicit Server(Settings settings)
      : settings_(std::move(settings)),
        cache_(settings_.prefix_cache_blocks, settings_.block_size),
        gpu_({.name = settings_.gpu,
              .dir = settings_.gpu_dir,
              .total_gib = settings_.gpu_memory_gib}) {}

  // Serves until a signal (or the drain after it) stops the io_context; returns the exit status.
  int run();

 private:
  // server.cpp
  task<void> start();
  bool bind_acceptor();
  task<void> accept_loop();
  void fail_start(int status, const std::string& message);
  task<void> session(Socket socket);
  task<bool> handle(TcpStream& stream, Request& req, const std::string& peer);
  Response answer(const Request& req, std::string_view path) const;
  void access_log(const std::string& peer, const Request& req, unsigned status) const;
  void record_last_request(const Request& req);
  bool authorized(const Request& req) const;
  std::string metrics_text() const;

  // generation.cpp
  Validated validate(const Request& req, bool chat) const;
  task<bool> complete(TcpStream& stream, const Request& req, const std::string& peer, bool chat);
  task<bool> complete_json(TcpStream& stream, const Request& req, const std::string& peer,
                           const Generation& g);
  json::object completion_body(const Generation& g) const;
  task<bool> complete_stream(TcpStream& stream, const Request& req, const std::string& peer,
                             const Generation& g);
  task<bool> stream_events(TcpStream& stream, const Generation& g, bool& finished);
  task<bool> write_event(TcpStream& stream, const std::string& prefix, std::string_view rest);
  std::string chunk_prefix(const Generation& g) const;
  void on_abort(const Generation& g);
  void prefill(Generation& g);
  void on_answered();

  // sleep.cpp
  task<bool> sleep_route(TcpStream& stream, const Request& req, const std::string& peer,
                         std::string_view path);
  task<Response> fall_asleep(const Request& req);
  task<Response> wake_up(const Request& req);
  Response collective_rpc(const Request& req);
  std::optional<Response> refuse_while_asleep(const Request& req);
  task<void> wait_abort(unsigned long epoch);
  bool claim_model_memory();
  void sleep_metrics(std::string& out) const;

  // Destruction order matters: ioc_ is destroyed before the state its coroutine frames touch.
  Settings settings_;
  PrefixCache cache_;
  EngineState engine_;
  SleepState sleep_;
  GpuBudget gpu_;
  bool going_to_sleep_ = false;  // a /sleep is waiting for (or aborting) the requests in flight
  unsigned long abort_epoch_ = 0;
  unsigned long requests_while_asleep_ = 0;
  unsigned long connections_total_ = 0;
  unsigned long requests_total_ = 0;
  int completions_answered_ = 0;
  json::value last_request_;
  int exit_code_ = 0;
  net::io_context ioc_{1};
  Acceptor acceptor_{ioc_};
  // Never expires; /sleep (mode=abort) cancels it, which ends every generation's wait_abort().
  Timer abort_{ioc_, Timer::time_point::max()};
};

}  // namespace va::sim
