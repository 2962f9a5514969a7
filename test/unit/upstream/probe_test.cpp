#include "upstream/probe.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <functional>
#include <list>
#include <optional>

#include "upstream/pool.hpp"

namespace va::upstream {
namespace {

using namespace std::chrono_literals;

Target target_of(const Acceptor& a) {
  const auto port = std::to_string(a.local_endpoint().port());
  return Target{
      .host = "127.0.0.1", .port = port, .host_header = "127.0.0.1:" + port, .headers = {}};
}

// Runs the probe against `t` to its end; what it returned and how long it took.
std::pair<ProbeResult, Clock::duration> run_probe(net::io_context& ioc, const Target& t,
                                                  std::chrono::milliseconds timeout) {
  std::optional<ProbeResult> got;
  const auto start = Clock::now();
  // (The probe keeps references to its arguments: they must outlive it.)
  const std::string path = "/health";
  const std::map<std::string, std::string> headers;
  net::co_spawn(ioc, probe(ioc.get_executor(), t, path, headers, timeout),
                [&](std::exception_ptr, ProbeResult r) { got = r; });
  while (!got && Clock::now() - start < 20s) {
    ioc.run_for(10ms);
  }
  EXPECT_TRUE(got.has_value());
  return {got.value_or(ProbeResult{}), Clock::now() - start};
}

TEST(Probe, ReadsTheHealthAnswer) {
  net::io_context ioc;
  Acceptor acceptor(ioc, {net::ip::make_address("127.0.0.1"), 0});
  Socket peer(ioc);
  acceptor.async_accept(peer, [&](error_code ec) {
    ASSERT_FALSE(ec);
    static constexpr std::string_view kAnswer =
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    net::async_write(peer, net::buffer(kAnswer), [](error_code, std::size_t) {});
  });
  const auto [r, took] = run_probe(ioc, target_of(acceptor), 5000ms);
  EXPECT_EQ(r.status, 200U);
  EXPECT_FALSE(r.error);
}

TEST(Probe, GivesUpOnASilentServerAfterItsTimeout) {
  // A server that accepts and never answers (vLLM stuck while loading): the probe must end.
  net::io_context ioc;
  Acceptor acceptor(ioc, {net::ip::make_address("127.0.0.1"), 0});
  Socket peer(ioc);
  acceptor.async_accept(peer, [](error_code) {});
  const auto [r, took] = run_probe(ioc, target_of(acceptor), 200ms);
  EXPECT_EQ(r.status, 0U);
  EXPECT_EQ(r.error, net::error::timed_out) << r.error.message();
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 10s);
}

TEST(Pool, ConnectGivesUpAfterItsTimeout) {
  // A listener whose accept queue is full drops the SYN, so the connect hangs.
  net::io_context ioc;
  Acceptor acceptor(ioc);
  acceptor.open(tcp::v4());
  acceptor.bind({net::ip::make_address("127.0.0.1"), 0});
  acceptor.listen(0);
  std::vector<Socket> queued;
  for (int i = 0; i < 2; ++i) {
    auto& s = queued.emplace_back(ioc);
    s.open(tcp::v4());
    s.non_blocking(true);
    const auto to = acceptor.local_endpoint();
    // (Asio's own connect would wait for the result even on a non-blocking socket.)
    ::connect(s.native_handle(), to.data(), to.size());  // queued, or its SYN dropped
  }
  std::optional<error_code> got;
  const auto start = Clock::now();
  const auto target = target_of(acceptor);  // (it must outlive the connect)
  net::co_spawn(ioc, Pool::connect(ioc.get_executor(), target, 300ms),
                [&](std::exception_ptr, std::pair<error_code, Stream> r) { got = r.first; });
  while (!got && Clock::now() - start < 20s) {
    ioc.run_for(10ms);
  }
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, net::error::timed_out) << got->message();
  EXPECT_GE(Clock::now() - start, 250ms);
}

// Accepts every connection to `acceptor` and keeps it open.
void accept_all(Acceptor& acceptor, std::list<Socket>& peers) {
  acceptor.async_accept([&](error_code ec, Socket s) {
    if (!ec) {
      peers.push_back(std::move(s));
      accept_all(acceptor, peers);
    }
  });
}

TEST(Pool, AConnectionIsReusedOnlyOnTheIoContextItWasOpenedOn) {
  // Two I/O threads' io_contexts (run here in turn by one thread): a connection released by a
  // session of one is never handed to a session of the other, whose operations would then
  // complete on the wrong thread.
  net::io_context one;
  net::io_context two;
  Acceptor acceptor(one, {net::ip::make_address("127.0.0.1"), 0});
  std::list<Socket> peers;
  accept_all(acceptor, peers);
  Pool pool(Pool::Settings{.target = target_of(acceptor)});
  // What forward() does: the caller's own idle connection, or a new one opened on its context.
  const auto acquire_on = [&](net::io_context& on) {
    if (auto idle = pool.take_idle(on.get_executor())) {
      return std::move(*idle);
    }
    std::optional<std::pair<error_code, Stream>> got;
    net::co_spawn(on, pool.open(),
                  [&](std::exception_ptr, std::pair<error_code, Stream> r) { got = std::move(r); });
    for (const auto start = Clock::now(); !got && Clock::now() - start < 20s;) {
      for (auto* c : {&one, &two}) {
        c->restart();
        c->poll();
      }
    }
    EXPECT_TRUE(got.has_value());
    EXPECT_FALSE(got && got->first) << got->first.message();
    return got ? Connection{std::move(got->second), false} : Connection{};
  };
  const auto context_of = [](const Connection& c) {
    return &c.stream->socket.get_executor().context();
  };

  auto first = acquire_on(one);
  ASSERT_TRUE(first.stream);
  EXPECT_FALSE(first.reused);
  EXPECT_EQ(context_of(first), &one);
  pool.release(std::move(first));

  auto second = acquire_on(two);  // the idle connection is one's: a new one
  ASSERT_TRUE(second.stream);
  EXPECT_FALSE(second.reused);
  EXPECT_EQ(context_of(second), &two);
  pool.release(std::move(second));

  for (auto* on : {&one, &two}) {  // each now takes its own idle connection
    auto again = acquire_on(*on);
    ASSERT_TRUE(again.stream);
    EXPECT_TRUE(again.reused);
    EXPECT_EQ(context_of(again), on);
    pool.release(std::move(again));
  }

  // Each io_context takes its own idle connection, and only as many as it released.
  auto ones = pool.take_idle(one.get_executor());
  ASSERT_TRUE(ones.has_value());
  EXPECT_TRUE(ones->reused);
  EXPECT_EQ(context_of(*ones), &one);
  EXPECT_FALSE(pool.take_idle(one.get_executor()).has_value());  // one had one idle connection
  auto twos = pool.take_idle(two.get_executor());
  ASSERT_TRUE(twos.has_value());
  EXPECT_EQ(context_of(*twos), &two);
}

}  // namespace
}  // namespace va::upstream
