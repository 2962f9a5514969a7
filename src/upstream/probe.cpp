#include "upstream/probe.hpp"

namespace va::upstream {

task<ProbeResult> probe(net::any_io_executor ex, const Target& target, const std::string& path,
                        const std::map<std::string, std::string>& headers,
                        std::chrono::milliseconds timeout) {
  auto [ec, up] = co_await Pool::connect(ex, target, timeout);
  if (ec) {
    co_return ProbeResult{0, ec};
  }
  http::request<http::empty_body> req{http::verb::get, path, 11};
  req.set(http::field::host, target.host_header);
  req.set(http::field::user_agent, "vllm-autoscaler-probe");
  req.keep_alive(false);
  for (const auto& [k, v] : headers) {
    req.set(k, v);
  }
  auto& stream = up->stream;
  stream.expires_after(timeout);
  auto [wec, wn] = co_await http::async_write(stream, req, use_nothrow);
  if (wec) {
    co_return ProbeResult{0, wec};
  }
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  auto [rec, rn] = co_await http::async_read(stream, buf, res, use_nothrow);
  if (rec) {
    co_return ProbeResult{0, rec};
  }
  co_return ProbeResult{res.result_int(), {}};
}

}  // namespace va::upstream
