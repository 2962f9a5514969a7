// vLLM's sleep mode (routes only with VLLM_SERVER_DEV_MODE=1): /sleep, /wake_up, /is_sleeping,
// /collective_rpc reload_weights; the simulated GPU memory they free and claim (gpu.hpp); and the
// refusal of inference while asleep.
#include <boost/url/parse.hpp>
#include <cstdio>
#include <string>

#include "core/log.hpp"
#include "sim/server.hpp"

namespace va::sim {

namespace {

// What stays on the GPU while asleep: the CUDA context and buffers (vLLM frees "up to 90%+").
constexpr double kAsleepShare = 0.02;

Response error(const Request& req, http::status status, std::string_view type,
               std::string_view message) {
  json::object err{
      {"message", message}, {"type", type}, {"param", nullptr}, {"code", static_cast<int>(status)}};
  return make_json(req, status, json::serialize(json::object{{"error", std::move(err)}}));
}

Response bad_request(const Request& req, std::string_view message) {
  return error(req, http::status::bad_request, "BadRequestError", message);
}

Response empty_ok(const Request& req) {
  Response res{http::status::ok, req.version()};
  res.keep_alive(req.keep_alive());
  return res;
}

std::string seconds_since(Clock::time_point t0) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6f", std::chrono::duration<double>(Clock::now() - t0).count());
  return buf;
}

std::string gib(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

// /sleep's query: level (1 or 2, default 1) and mode (abort or wait, default abort).
struct SleepQuery {
  int level = 1;
  bool wait = false;
};

std::variant<SleepQuery, std::string> parse_sleep_query(std::string_view target) {
  auto url = boost::urls::parse_origin_form(target);
  if (!url) {
    return std::string("invalid request target");
  }
  SleepQuery q;
  for (const auto& p : url->params()) {
    if (p.key == "level" && (p.value == "1" || p.value == "2")) {
      q.level = p.value == "1" ? 1 : 2;
    } else if (p.key == "mode" && (p.value == "abort" || p.value == "wait")) {
      q.wait = p.value == "wait";
    } else if (p.key == "level" || p.key == "mode") {
      return "unsupported " + p.key + ": " + p.value + " (vllm-sim: level 1|2, mode abort|wait)";
    }
  }
  return q;
}

// /wake_up's tags: which of weights and kv_cache to restore (both when none is named).
std::variant<std::pair<bool, bool>, std::string> parse_wake_tags(std::string_view target) {
  auto url = boost::urls::parse_origin_form(target);
  if (!url) {
    return std::string("invalid request target");
  }
  bool weights = false;
  bool kv_cache = false;
  for (const auto& p : url->params()) {
    if (p.key != "tags") {
      continue;
    }
    if (p.value != "weights" && p.value != "kv_cache") {
      return "unknown tag: " + p.value + " (weights or kv_cache)";
    }
    (p.value == "weights" ? weights : kv_cache) = true;
  }
  if (!weights && !kv_cache) {
    return std::pair{true, true};
  }
  return std::pair{weights, kv_cache};
}

}  // namespace

task<bool> Server::sleep_route(TcpStream& stream, const Request& req, const std::string& peer,
                               std::string_view path) {
  Response res;
  if (path == "/is_sleeping") {
    res = make_json(req, http::status::ok,
                    json::serialize(json::object{{"is_sleeping", sleep_.sleeping()}}));
  } else if (path == "/collective_rpc") {
    res = collective_rpc(req);
  } else if (!settings_.enable_sleep_mode) {
    res = bad_request(req, "Sleep mode is not enabled (start vllm-sim with --enable-sleep-mode)");
  } else if (path == "/sleep") {
    res = co_await fall_asleep(req);
  } else {
    res = co_await wake_up(req);
  }
  access_log(peer, req, res.result_int());
  co_return co_await send(stream, std::move(res));
}

task<Response> Server::fall_asleep(const Request& req) {
  auto parsed = parse_sleep_query(req.target());
  if (auto* message = std::get_if<std::string>(&parsed)) {
    co_return bad_request(req, *message);
  }
  const auto q = std::get<SleepQuery>(parsed);
  if (sleep_.sleeping() || going_to_sleep_) {
    log::warn("Executor is already sleeping.");
    co_return empty_ok(req);
  }
  const auto t0 = Clock::now();
  going_to_sleep_ = true;  // from here on inference fails, as it would in vLLM
  if (!q.wait && engine_.running > 0) {
    log::info("Aborting " + std::to_string(engine_.running) + " requests before sleeping");
    ++abort_epoch_;
    abort_.cancel();
  }
  while (engine_.running > 0) {
    co_await sleep_for(std::chrono::milliseconds(5));
  }
  co_await sleep_for(q.level == 1 ? settings_.sleep_delay : settings_.sleep_delay_l2);
  const double before = gpu_.used();
  (void)gpu_.claim(settings_.model_memory_gib * kAsleepShare);  // a decrease always fits
  sleep_.fall_asleep(q.level);
  going_to_sleep_ = false;
  log::info("Sleep mode freed " + gib(before - gpu_.used()) + " GiB memory, " + gib(gpu_.used()) +
            " GiB memory is still in use.");
  log::info("It took " + seconds_since(t0) + " seconds to fall asleep.", {{"level", q.level}});
  co_return empty_ok(req);
}

task<Response> Server::wake_up(const Request& req) {
  auto parsed = parse_wake_tags(req.target());
  if (auto* message = std::get_if<std::string>(&parsed)) {
    co_return bad_request(req, *message);
  }
  const auto [weights, kv_cache] = std::get<std::pair<bool, bool>>(parsed);
  if (!sleep_.sleeping()) {
    co_return empty_ok(req);
  }
  const auto t0 = Clock::now();
  // The first tag restored claims the model's whole memory back (weights and KV cache pool).
  if (gpu_.used() < settings_.model_memory_gib) {
    if (auto oom = gpu_.claim(settings_.model_memory_gib)) {
      log::error("wake_up failed: " + *oom);
      co_return error(req, http::status::internal_server_error, "InternalServerError", *oom);
    }
  }
  co_await sleep_for(sleep_.level() == 2 ? settings_.wake_delay_l2 : settings_.wake_delay);
  const bool awake = sleep_.wake(weights, kv_cache);
  std::string tags = weights && kv_cache ? "weights, kv_cache" : weights ? "weights" : "kv_cache";
  log::info("It took " + seconds_since(t0) + " seconds to wake up tags {" + tags + "}.",
            {{"awake", awake}});
  co_return empty_ok(req);
}

Response Server::collective_rpc(const Request& req) {
  error_code ec;
  const auto body = json::parse(req.body(), ec);
  const auto* method = ec || !body.is_object() ? nullptr : body.get_object().if_contains("method");
  if (method == nullptr || !method->is_string() || method->get_string() != "reload_weights") {
    return bad_request(req, "vllm-sim's collective_rpc knows only {\"method\":\"reload_weights\"}");
  }
  if (!sleep_.reload_weights()) {
    return error(req, http::status::internal_server_error, "InternalServerError",
                 "reload_weights: the weights are not on the GPU (wake_up?tags=weights first)");
  }
  log::info("Reloaded the model weights");
  return make_json(req, http::status::ok, R"({"results":[null]})");
}

// vLLM fails (or crashes) on inference sent while asleep or half woken, and serves garbage after
// a level-2 wake that skipped reload_weights: the sim answers 500 and counts it.
std::optional<Response> Server::refuse_while_asleep(const Request& req) {
  if (sleep_.can_serve() && !going_to_sleep_) {
    return std::nullopt;
  }
  ++requests_while_asleep_;
  const bool garbage = !sleep_.sleeping() && !going_to_sleep_;
  log::error(garbage ? "Inference after a level-2 wake without reload_weights"
                     : "Inference sent to a sleeping engine");
  return error(req, http::status::internal_server_error, "InternalServerError",
               garbage ? "The weights were discarded by a level-2 sleep and not reloaded "
                         "(POST /collective_rpc {\"method\":\"reload_weights\"}): vLLM would "
                         "answer garbage"
                       : "The engine is sleeping (POST /wake_up first): vLLM fails on inference "
                         "sent while asleep");
}

// Completes when /sleep aborts the requests in flight (mode=abort): a third racer beside a
// generation and watch_disconnect(). `epoch` is abort_epoch_ when the generation started.
task<void> Server::wait_abort(unsigned long epoch) {
  if (epoch == abort_epoch_) {
    co_await abort_.async_wait(use_nothrow);
  }
}

bool Server::claim_model_memory() {
  if (auto oom = gpu_.claim(settings_.model_memory_gib)) {
    fail_start(1, "torch.OutOfMemoryError: " + *oom);
    return false;
  }
  if (!settings_.gpu.empty()) {
    log::info("Model loading took " + gib(settings_.model_memory_gib) + " GiB memory",
              {{"gpu", settings_.gpu}});
  }
  return true;
}

void Server::sleep_metrics(std::string& out) const {
  if (settings_.enable_sleep_mode) {
    out +=
        "# HELP vllm:engine_sleep_state Engine sleep state; awake = 0 means engine is sleeping; "
        "awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; "
        "discard_all = 1 means sleep level 2.\n"
        "# TYPE vllm:engine_sleep_state gauge\n";
    for (std::string_view state : {"awake", "weights_offloaded", "discard_all"}) {
      out += "vllm:engine_sleep_state{engine=\"0\",model_name=\"" + settings_.model +
             "\",sleep_state=\"" + std::string(state) + "\"} " +
             (state == sleep_.label() ? "1.0" : "0.0") + "\n";
    }
  }
  out +=
      "# HELP vllm_sim_requests_while_asleep_total Inference requests refused because the "
      "engine was asleep, half woken, or woken from level 2 without reload_weights.\n"
      "# TYPE vllm_sim_requests_while_asleep_total counter\n"
      "vllm_sim_requests_while_asleep_total " +
      std::to_string(requests_while_asleep_) + ".0\n";
}

}  // namespace va::sim
