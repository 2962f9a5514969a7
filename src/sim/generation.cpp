// /v1/completions and /v1/chat/completions: validation, generation (a JSON answer or an SSE
// stream, one event per token on real timers), aborts when the client leaves, and the fault knobs
// that fire while answering.
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "core/log.hpp"
#include "core/socket.hpp"
#include "sim/server.hpp"
#include "sim/text.hpp"

namespace va::sim {

namespace {

using namespace net::experimental::awaitable_operators;

// Process-exit paths for the fault knobs: flush what the log has, say why on stderr, and leave
// without unwinding (a crash does not run destructors either).
[[noreturn]] void crash(int status, const std::string& why) {
  std::fflush(stdout);
  std::fprintf(stderr, "%s\n", why.c_str());
  std::fflush(stderr);
  std::_Exit(status);
}

Response make_error(const Request& req, http::status status, std::string_view type,
                    std::string_view message, std::string_view param = {}) {
  json::object err;
  err["message"] = message;
  err["type"] = type;
  err["param"] = param.empty() ? json::value(nullptr) : json::value(param);
  err["code"] = static_cast<int>(status);
  return make_json(req, status, json::serialize(json::object{{"error", std::move(err)}}));
}

Response bad_request(const Request& req, std::string message) {
  return make_error(req, http::status::bad_request, "BadRequestError", message);
}

// The request names the served model (or none) and has its input: "messages" for a chat, a
// "prompt" otherwise.
std::optional<Response> check_model_and_input(const Request& req, const json::object& body,
                                              bool chat, const std::string& served_model) {
  if (const auto* model = body.if_contains("model"); model && !model->is_null()) {
    if (!model->is_string()) {
      return bad_request(req, "model: Input should be a valid string");
    }
    if (model->get_string() != served_model) {
      return make_error(req, http::status::not_found, "NotFoundError",
                        "The model `" + std::string(model->get_string()) + "` does not exist.",
                        "model");
    }
  }
  if (chat) {
    const auto* messages = body.if_contains("messages");
    if (messages == nullptr || !messages->is_array()) {
      return bad_request(req, "messages: Field required");
    }
  } else {
    const auto* prompt = body.if_contains("prompt");
    if (prompt == nullptr || !(prompt->is_string() || prompt->is_array())) {
      return bad_request(req, "prompt: Field required");
    }
  }
  return std::nullopt;
}

// max_completion_tokens, else max_tokens, overrides g.max_tokens.
std::optional<Response> read_max_tokens(const Request& req, const json::object& body,
                                        Generation& g) {
  for (const char* key : {"max_completion_tokens", "max_tokens"}) {
    const auto* v = body.if_contains(key);
    if (v == nullptr || v->is_null()) {
      continue;
    }
    const auto n = v->is_int64() ? v->get_int64() : v->is_uint64() ? -1 : 0;
    if (n < 1 || n > 1'000'000) {
      return bad_request(req, std::string(key) + ": must be a positive integer");
    }
    g.max_tokens = static_cast<int>(n);
    break;
  }
  return std::nullopt;
}

// "stream" and "stream_options" into g.stream and g.include_usage.
std::optional<Response> read_stream_options(const Request& req, const json::object& body,
                                            Generation& g) {
  if (const auto* s = body.if_contains("stream"); s && !s->is_null()) {
    if (!s->is_bool()) {
      return bad_request(req, "stream: Input should be a valid boolean");
    }
    g.stream = s->get_bool();
  }
  if (const auto* so = body.if_contains("stream_options"); so && !so->is_null()) {
    if (!g.stream) {
      return bad_request(req, "Stream options can only be defined when `stream=True`.");
    }
    if (!so->is_object()) {
      return bad_request(req, "stream_options: Input should be an object");
    }
    g.include_usage = true;  // vLLM's StreamOptions default
    if (const auto* iu = so->get_object().if_contains("include_usage"); iu && iu->is_bool()) {
      g.include_usage = iu->get_bool();
    }
  }
  return std::nullopt;
}

json::object usage(const Generation& g, int completion_tokens) {
  return json::object{{"prompt_tokens", g.prompt_tokens},
                      {"total_tokens", g.prompt_tokens + completion_tokens},
                      {"completion_tokens", completion_tokens}};
}

// Completes when the peer has closed or reset the connection; runs beside a generation, as
// vLLM's listen_for_disconnect() does.
task<void> watch_disconnect(Socket& socket) {
  for (;;) {
    auto [ec] = co_await socket.async_wait(Socket::wait_read, use_nothrow);
    if (ec) {
      co_return;
    }
    const Peer peer = peek_peer(socket.native_handle());
    if (peer == Peer::closed) {
      co_return;
    }
    if (peer == Peer::sent_data) {
      // A pipelined request, not a disconnect: stop watching until the generation ends.
      Timer forever(co_await net::this_coro::executor, Timer::time_point::max());
      co_await forever.async_wait(use_nothrow);
      co_return;
    }
  }
}

// Writes one chunk of the chunked body by itself, so each event leaves when it is generated.
// The framing is done here and the bytes go straight to the socket: beast's chunk buffers
// through basic_stream cost several times more CPU per event, which a benchmark would see.
task<bool> write_chunk(TcpStream& stream, std::string_view data) {
  char size[20];
  const auto len = std::to_chars(size, size + sizeof size, data.size(), 16).ptr - size;
  std::string framed;
  framed.reserve(static_cast<std::size_t>(len) + data.size() + 4);
  framed.append(size, static_cast<std::size_t>(len)).append("\r\n").append(data).append("\r\n");
  auto [ec, n] = co_await net::async_write(stream.socket(), net::buffer(framed), use_nothrow);
  co_return !ec;
}

task<bool> write_chunk_last(TcpStream& stream) {
  auto [ec, n] =
      co_await net::async_write(stream.socket(), net::buffer("0\r\n\r\n", 5), use_nothrow);
  co_return !ec;
}

// The members of token i's event after the shared prefix.
std::string token_event(const Generation& g, int i) {
  const bool last = i + 1 == g.max_tokens;
  // Token texts are plain ASCII, so no escaping is needed.
  std::string rest = g.chat ? R"("choices":[{"index":0,"delta":{"content":")"
                            : R"("choices":[{"index":0,"text":")";
  rest.append(token_text(i)).append(g.chat ? "\"}," : "\",");
  rest.append(last     ? R"("logprobs":null,"finish_reason":"length","stop_reason":null}])"
              : g.chat ? R"("logprobs":null,"finish_reason":null}])"
                       : R"("logprobs":null,"finish_reason":null,"stop_reason":null}])");
  return rest;
}

}  // namespace

Validated Server::validate(const Request& req, bool chat) const {
  error_code ec;
  const json::value parsed = json::parse(req.body(), ec);
  if (ec || !parsed.is_object()) {
    return make_error(req, http::status::bad_request, "BadRequestError",
                      ec ? "JSON decode error: " + ec.message()
                         : std::string("Request body must be a JSON object"));
  }
  const auto& body = parsed.get_object();
  if (auto rejected = check_model_and_input(req, body, chat, settings_.model)) {
    return std::move(*rejected);
  }
  Generation g;
  g.chat = chat;
  g.id = (chat ? "chatcmpl-" : "cmpl-") + random_hex(32);
  g.created = unix_seconds();
  g.max_tokens = settings_.max_tokens;
  if (auto rejected = read_max_tokens(req, body, g)) {
    return std::move(*rejected);
  }
  g.prompt_tokens = count_prompt_tokens(body, chat);
  if (settings_.prefix_cache_blocks > 0) {
    g.blocks = cache_.blocks(prompt_tokens(body, chat));
  }
  if (auto rejected = read_stream_options(req, body, g)) {
    return std::move(*rejected);
  }
  return g;
}

// The prefix cache's part: how much of the prompt it had, and what the rest costs to prefill.
void Server::prefill(Generation& g) {
  const auto hit_blocks = cache_.use(g.blocks);
  const auto prompt = static_cast<unsigned long>(g.prompt_tokens);
  const auto hits = std::min(prompt, static_cast<unsigned long>(hit_blocks) *
                                         static_cast<unsigned long>(cache_.block_size()));
  engine_.prefix_cache_queries += prompt;
  engine_.prefix_cache_hits += hits;
  g.ttft = settings_.ttft + settings_.prefill_per_token * static_cast<long>(prompt - hits);
}

void Server::on_abort(const Generation& g) {
  ++engine_.finished_abort;
  log::info("Request " + g.id + " aborted.");
}

void Server::on_answered() {
  if (settings_.exit_after > 0 && ++completions_answered_ >= settings_.exit_after) {
    crash(1, "simulated crash after " + std::to_string(settings_.exit_after) + " requests");
  }
}

task<bool> Server::complete(TcpStream& stream, const Request& req, const std::string& peer,
                            bool chat) {
  auto validated = validate(req, chat);
  if (auto* rejected = std::get_if<Response>(&validated)) {
    access_log(peer, req, rejected->result_int());
    const bool keep = co_await send(stream, std::move(*rejected));
    on_answered();
    co_return keep;
  }
  if (auto refused = refuse_while_asleep(req)) {
    access_log(peer, req, refused->result_int());
    const bool keep = co_await send(stream, std::move(*refused));
    on_answered();
    co_return keep;
  }
  auto& g = std::get<Generation>(validated);
  prefill(g);
  Running running(engine_.running);
  engine_.prompt_tokens_total += static_cast<unsigned long>(g.prompt_tokens);
  if (settings_.access_log) {
    log::info(
        "Received request " + g.id,
        {{"max_tokens", g.max_tokens}, {"stream", g.stream}, {"prompt_tokens", g.prompt_tokens}});
  }
  // Not a conditional expression: GCC 12 evaluates both co_await operands of `?:`.
  if (g.stream) {
    co_return co_await complete_stream(stream, req, peer, g);
  }
  co_return co_await complete_json(stream, req, peer, g);
}

task<bool> Server::complete_json(TcpStream& stream, const Request& req, const std::string& peer,
                                 const Generation& g) {
  const auto duration = g.ttft + settings_.itl * (g.max_tokens - 1);
  const auto raced = co_await (sleep_for(duration) || watch_disconnect(stream.socket()) ||
                               wait_abort(abort_epoch_));
  if (raced.index() != 0) {
    on_abort(g);
    co_return false;
  }
  const json::object body = completion_body(g);
  engine_.generation_tokens_total += static_cast<unsigned long>(g.max_tokens);
  access_log(peer, req, 200);
  const bool keep = co_await send(stream, make_json(req, http::status::ok, json::serialize(body)));
  ++engine_.finished_length;
  on_answered();
  co_return keep;
}

// The whole answer of a non-streaming generation: all max_tokens tokens, finished by length.
json::object Server::completion_body(const Generation& g) const {
  std::string text;
  for (int i = 0; i < g.max_tokens; ++i) {
    text += token_text(i);
  }
  json::object choice;
  choice["index"] = 0;
  if (g.chat) {
    choice["message"] =
        json::object{{"role", "assistant"}, {"content", text}, {"tool_calls", json::array{}}};
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = "length";
  choice["stop_reason"] = nullptr;
  return json::object{{"id", g.id},
                      {"object", g.chat ? "chat.completion" : "text_completion"},
                      {"created", g.created},
                      {"model", settings_.model},
                      {"choices", json::array{std::move(choice)}},
                      {"usage", usage(g, g.max_tokens)}};
}

task<bool> Server::complete_stream(TcpStream& stream, const Request& req, const std::string& peer,
                                   const Generation& g) {
  http::response<http::empty_body> res{http::status::ok, req.version()};
  res.set(http::field::content_type, "text/event-stream; charset=utf-8");
  res.keep_alive(req.keep_alive());
  res.chunked(true);
  http::response_serializer<http::empty_body> serializer{res};
  const auto epoch = abort_epoch_;  // a /sleep while the header goes out aborts this one too
  access_log(peer, req, 200);
  auto [ec, n] = co_await http::async_write_header(stream, serializer, use_nothrow);
  if (ec) {
    on_abort(g);
    co_return false;
  }
  // `finished` is set once the last token has gone out: like vLLM's engine, a client that
  // leaves after that (say, right after reading [DONE]) does not abort the request.
  bool finished = false;
  const auto raced = co_await (stream_events(stream, g, finished) ||
                               watch_disconnect(stream.socket()) || wait_abort(epoch));
  if (!finished) {
    on_abort(g);
    co_return false;
  }
  const bool delivered = raced.index() == 0 && std::get<0>(raced);
  ++engine_.finished_length;
  on_answered();
  co_return delivered&& res.keep_alive();
}

// Writes `data: {<prefix>,<rest>}\n\n`, where `prefix` holds the fields every chunk of a
// generation shares and `rest` the JSON members of this one.
task<bool> Server::write_event(TcpStream& stream, const std::string& prefix,
                               std::string_view rest) {
  std::string event = "data: {";
  event.append(prefix).append(",").append(rest);
  if (settings_.event_timestamps) {
    event.append(",\"sim_sent_ns\":").append(std::to_string(realtime_ns()));
  }
  event.append("}\n\n");
  co_return co_await write_chunk(stream, event);
}

// `"id":…,"object":…,"created":…,"model":…`: the members every chunk starts with.
std::string Server::chunk_prefix(const Generation& g) const {
  auto text =
      json::serialize(json::object{{"id", g.id},
                                   {"object", g.chat ? "chat.completion.chunk" : "text_completion"},
                                   {"created", g.created},
                                   {"model", settings_.model}});
  return text.substr(1, text.size() - 2);
}

// The SSE body after the header: returns false when the client went away mid-stream.
task<bool> Server::stream_events(TcpStream& stream, const Generation& g, bool& finished) {
  const auto prefix = chunk_prefix(g);
  co_await sleep_for(g.ttft);
  if (g.chat &&
      !co_await write_event(stream, prefix,
                            R"("choices":[{"index":0,"delta":{"role":"assistant","content":""},)"
                            R"("logprobs":null,"finish_reason":null}])")) {
    co_return false;
  }
  for (int i = 0; i < g.max_tokens; ++i) {
    if (i > 0) {
      co_await sleep_for(settings_.itl);
    }
    if (!co_await write_event(stream, prefix, token_event(g, i))) {
      co_return false;
    }
    ++engine_.generation_tokens_total;
    finished = i + 1 == g.max_tokens;
    if (settings_.die_mid_stream_after > 0 && i + 1 == settings_.die_mid_stream_after) {
      crash(1, "simulated crash mid-stream after " + std::to_string(i + 1) + " tokens");
    }
  }
  if (g.include_usage &&
      !co_await write_event(stream, prefix,
                            R"("choices":[],"usage":)" + json::serialize(usage(g, g.max_tokens)))) {
    co_return false;
  }
  if (!co_await write_chunk(stream, "data: [DONE]\n\n")) {
    co_return false;
  }
  co_return co_await write_chunk_last(stream);
}

}  // namespace va::sim
