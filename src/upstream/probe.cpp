#include "upstream/probe.hpp"

namespace va::upstream {

task<ProbeResult> probe(Executor ex, const Target& target, const std::string& path,
                        const std::map<std::string, std::string>& headers,
                        std::chrono::milliseconds timeout) {
  auto [ec, up] = co_await Pool::connect(ex, target, timeout);
  if (ec) {
    co_return ProbeResult{0, ec, {}};
  }
  http::request<http::empty_body> req{http::verb::get, path, 11};
  req.set(http::field::host, target.host_header);
  req.set(http::field::user_agent, "vllm-autoscaler-probe");
  req.keep_alive(false);
  for (const auto& [k, v] : headers) {
    req.set(k, v);
  }
  auto& socket = up->socket;
  auto& deadline = up->silence;
  deadline.watch(socket, Clock::now() + timeout);
  auto [write_error, wn] = co_await http::async_write(socket, req, use_nothrow);
  if (write_error) {
    co_return ProbeResult{0, deadline.explain(write_error), {}};
  }
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  auto [read_error, rn] = co_await http::async_read(socket, buf, res, use_nothrow);
  if (read_error) {
    co_return ProbeResult{0, deadline.explain(read_error), {}};
  }
  co_return ProbeResult{res.result_int(), {}, std::move(res.body())};
}

}  // namespace va::upstream
