#include "k8s/watch.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "k8s/client.hpp"
#include "unit/k8s/tls_server.hpp"

namespace va::k8s {
namespace {

using testing::chunk;
using ::testing::HasSubstr;
using testing::KeyPair;
using testing::make_cert;
using testing::reply;
using testing::Request;
using testing::TlsServer;

const std::string kModified =
    R"({"type":"MODIFIED","object":{"kind":"Deployment","apiVersion":"apps/v1",)"
    R"("metadata":{"name":"vllm","namespace":"llm","resourceVersion":"50130"},)"
    R"("spec":{"replicas":1},"status":{"readyReplicas":1}}})"
    "\n";
const std::string kBookmark =
    R"({"type":"BOOKMARK","object":{"kind":"Deployment","apiVersion":"apps/v1",)"
    R"("metadata":{"resourceVersion":"50377","creationTimestamp":null},"spec":{},"status":{}}})"
    "\n";
const std::string kExpired =
    R"({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},)"
    R"j("status":"Failure","message":"too old resource version: 50123 (50300)",)j"
    R"("reason":"Expired","code":410}})"
    "\n";

std::vector<outcome<WatchEvent>> drain(WatchDecoder& d) {
  std::vector<outcome<WatchEvent>> out;
  while (auto e = d.next()) {
    out.push_back(std::move(*e));
  }
  return out;
}

TEST(WatchDecoderTest, EventsSplitByteByByte) {
  WatchDecoder d;
  const std::string all = kModified + kBookmark + kExpired;
  std::vector<outcome<WatchEvent>> events;
  for (char c : all) {
    d.feed(std::string_view(&c, 1));
    for (auto& e : drain(d)) {
      events.push_back(std::move(e));
    }
  }
  ASSERT_EQ(events.size(), 3u);
  for (const auto& e : events) {
    ASSERT_TRUE(e) << e.error().message;
  }
  EXPECT_EQ(events[0]->type, WatchEvent::Type::modified);
  EXPECT_EQ(events[0]->resource_version, "50130");
  EXPECT_EQ(events[0]->object.at("metadata").at("name").as_string(), "vllm");
  EXPECT_EQ(events[0]->object.at("status").at("readyReplicas").as_int64(), 1);
  EXPECT_EQ(events[1]->type, WatchEvent::Type::bookmark);
  EXPECT_EQ(events[2]->type, WatchEvent::Type::error);
  EXPECT_FALSE(d.has_partial_line());
}

TEST(WatchDecoderTest, SeveralEventsInOneChunkAndAPartialOne) {
  WatchDecoder d;
  const std::string added =
      R"({"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"7"}}})"
      "\n";
  const std::string deleted =
      R"({"type":"DELETED","object":{"metadata":{"name":"a","resourceVersion":"9"}}})"
      "\n";
  d.feed(added + "\n" + kModified + deleted.substr(0, 20));  // a blank line is skipped
  auto first = drain(d);
  ASSERT_EQ(first.size(), 2u);
  ASSERT_TRUE(first[0] && first[1]);
  EXPECT_EQ(first[0]->type, WatchEvent::Type::added);
  EXPECT_EQ(first[0]->resource_version, "7");
  EXPECT_EQ(first[1]->type, WatchEvent::Type::modified);
  EXPECT_TRUE(d.has_partial_line());
  d.feed(deleted.substr(20));
  auto rest = drain(d);
  ASSERT_EQ(rest.size(), 1u);
  ASSERT_TRUE(rest[0]);
  EXPECT_EQ(rest[0]->type, WatchEvent::Type::deleted);
  EXPECT_EQ(rest[0]->resource_version, "9");
  EXPECT_EQ(to_string(rest[0]->type), "DELETED");
  EXPECT_FALSE(d.has_partial_line());
}

TEST(WatchDecoderTest, Bookmark) {
  auto e = parse_watch_event(kBookmark);
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_EQ(e->type, WatchEvent::Type::bookmark);
  EXPECT_EQ(e->resource_version, "50377");
  EXPECT_FALSE(is_expired(*e));
}

TEST(WatchDecoderTest, Error410Expired) {
  auto e = parse_watch_event(kExpired);
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_EQ(e->type, WatchEvent::Type::error);
  EXPECT_EQ(e->error_code, 410);
  EXPECT_EQ(e->error_reason, "Expired");
  EXPECT_EQ(e->error_message, "too old resource version: 50123 (50300)");
  EXPECT_EQ(e->resource_version, "");
  EXPECT_TRUE(is_expired(*e));

  auto gone = parse_watch_event(R"({"type":"ERROR","object":{"kind":"Status","reason":"Gone"}})");
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->error_code, 0);
  EXPECT_TRUE(is_expired(*gone));

  auto internal = parse_watch_event(
      R"({"type":"ERROR","object":{"kind":"Status","reason":"InternalError","code":500}})");
  ASSERT_TRUE(internal);
  EXPECT_EQ(internal->error_code, 500);
  EXPECT_FALSE(is_expired(*internal));
}

TEST(WatchDecoderTest, MalformedLinesAreFailuresAndDecodingGoesOn) {
  WatchDecoder d;
  d.feed("{\"type\":\"ADDED\",\"object\":\n");
  d.feed("[1,2]\n");
  d.feed(R"({"type":"SYNC","object":{}})"
         "\n");
  d.feed(R"({"type":"ADDED"})"
         "\n");
  d.feed(R"({"type":7,"object":{}})"
         "\r\n");
  d.feed(kBookmark);
  auto events = drain(d);
  ASSERT_EQ(events.size(), 6u);
  const char* expected[] = {"not JSON", "not a JSON object", "unknown type \"SYNC\"",
                            "no \"object\" object", "no \"type\" string"};
  for (int i = 0; i < 5; ++i) {
    ASSERT_FALSE(events[i]) << i;
    EXPECT_EQ(events[i].error().code, errc::bad_request);
    EXPECT_THAT(events[i].error().message, HasSubstr("kubernetes watch: malformed event"));
    EXPECT_THAT(events[i].error().message, HasSubstr(expected[i]));
  }
  ASSERT_TRUE(events[5]);
  EXPECT_EQ(events[5]->type, WatchEvent::Type::bookmark);
}

TEST(WatchDecoderTest, OverLongLineIsAFailureAndIsSkipped) {
  WatchDecoder d(64);
  d.feed(std::string(50, 'x'));
  EXPECT_FALSE(d.next());
  d.feed(std::string(50, 'x'));
  auto e = d.next();
  ASSERT_TRUE(e);
  ASSERT_FALSE(*e);
  EXPECT_EQ(e->error().code, errc::body_too_large);
  EXPECT_THAT(e->error().message, HasSubstr("longer than 64 bytes"));
  d.feed(std::string(1000, 'x'));  // the rest of that line is dropped, not buffered
  EXPECT_FALSE(d.next());
  EXPECT_FALSE(d.has_partial_line());
  const std::string small = R"({"type":"ADDED","object":{}})"
                            "\n";
  d.feed("xx\n" + small);
  auto after = drain(d);
  ASSERT_EQ(after.size(), 1u);
  ASSERT_TRUE(after[0]) << after[0].error().message;
  EXPECT_EQ(after[0]->type, WatchEvent::Type::added);

  // A whole over-long line in one piece.
  d.feed(std::string(65, 'y') + "\n" + small);
  auto whole = drain(d);
  ASSERT_EQ(whole.size(), 2u);
  ASSERT_FALSE(whole[0]);
  EXPECT_EQ(whole[0].error().code, errc::body_too_large);
  EXPECT_TRUE(whole[1]);
}

TEST(WatchDecoderTest, ExpiredResponses) {
  EXPECT_TRUE(is_expired_response(Response{410, R"({"kind":"Status","code":410})", {}, {}}));
  EXPECT_TRUE(is_expired_response(
      Response{500,
               R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",)"
               R"("message":"etcdserver: mvcc: required revision has been compacted",)"
               R"("code":500})",
               {},
               {}}));
  EXPECT_FALSE(is_expired_response(Response{
      500, R"({"kind":"Status","message":"etcdserver: request timed out","code":500})", {}, {}}));
  EXPECT_FALSE(is_expired_response(Response{500, "not json", {}, {}}));
  EXPECT_FALSE(is_expired_response(Response{200, "{}", {}, {}}));
}

// The streaming watch against the in-process HTTPS server.
class WatchClientTest : public testing::TlsApiTest {
 protected:
  static task<void> write(TlsServer::Stream& s, const std::string& bytes) {
    co_await net::async_write(s, net::buffer(bytes), use_nothrow);
  }
  static task<void> sleep(TlsServer::Stream& s, std::chrono::milliseconds d) {
    Timer t(s.get_executor(), d);
    co_await t.async_wait(use_nothrow);
  }

  static constexpr const char* kHead =
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  static constexpr const char* kTarget =
      "/apis/apps/v1/namespaces/llm/deployments?fieldSelector=metadata.name%3Dvllm&watch=1"
      "&resourceVersion=50123&allowWatchBookmarks=true&timeoutSeconds=300";
  static constexpr std::chrono::milliseconds kLimit = std::chrono::seconds(10);
};

TEST_F(WatchClientTest, StreamsChunkedEventsAsTheyArrive) {
  std::vector<WatchEvent> seen;
  bool first_before_rest = false;
  TlsServer server(ioc_, server_cert_, [](const Request&) { return std::nullopt; });
  server.stream_with([&](const Request&, TlsServer::Stream& s) -> task<void> {
    co_await write(s, kHead);
    // The first event cut across two chunks.
    co_await write(s, chunk(kModified.substr(0, 30)));
    co_await sleep(s, std::chrono::milliseconds(20));
    co_await write(s, chunk(kModified.substr(30)));
    // The client sees it before anything more is sent.
    for (int i = 0; i < 200 && seen.empty(); ++i) {
      co_await sleep(s, std::chrono::milliseconds(10));
    }
    first_before_rest = seen.size() == 1;
    // A bookmark and the start of the error in one chunk, the rest in the next.
    co_await write(s, chunk(kBookmark + kExpired.substr(0, 10)));
    co_await write(s, chunk(kExpired.substr(10)) + chunk(""));
  });
  Client client(cluster(server), ioc_.get_executor());
  auto r = run(client.watch(kTarget, kLimit, [&](WatchEvent&& e) {
    seen.push_back(std::move(e));
    return true;
  }));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->body, "");
  EXPECT_TRUE(first_before_rest);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].type, WatchEvent::Type::modified);
  EXPECT_EQ(seen[0].resource_version, "50130");
  EXPECT_EQ(seen[1].type, WatchEvent::Type::bookmark);
  EXPECT_EQ(seen[1].resource_version, "50377");
  EXPECT_TRUE(is_expired(seen[2]));
  ASSERT_EQ(server.received.size(), 1u);
  const auto& req = server.received[0].request;
  EXPECT_EQ(req.target(), kTarget);
  EXPECT_EQ(req[http::field::authorization], "Bearer static-token");
  EXPECT_EQ(req[http::field::accept], "application/json");
}

TEST_F(WatchClientTest, ASilentStreamACutOneAndAMalformedEventAreFailures) {
  int mode = 0;
  TlsServer server(ioc_, server_cert_, [](const Request&) { return std::nullopt; });
  server.stream_with([&](const Request&, TlsServer::Stream& s) -> task<void> {
    co_await write(s, kHead);
    if (mode == 0) {  // silent after one event
      co_await write(s, chunk(kModified));
      co_await sleep(s, std::chrono::hours(1));
    } else if (mode == 1) {  // closed inside an event
      co_await write(s, chunk(kModified.substr(0, 30)));
    } else {
      co_await write(s, chunk("{not json}\n" + kModified) + chunk(""));
    }
  });
  Client client(cluster(server), ioc_.get_executor());
  int events = 0;
  auto count = [&](WatchEvent&&) {
    ++events;
    return true;
  };

  auto idle = run(client.watch("/w", std::chrono::milliseconds(200), count));
  ASSERT_FALSE(idle);
  EXPECT_EQ(idle.error().code, errc::scaler_error);
  EXPECT_THAT(idle.error().message, HasSubstr(": GET /w: timed out"));
  EXPECT_EQ(events, 1);

  mode = 1;
  auto cut = run(client.watch("/w", kLimit, count));
  ASSERT_FALSE(cut);
  EXPECT_THAT(cut.error().message, HasSubstr(": GET /w: read: "));
  EXPECT_EQ(events, 1);

  mode = 2;
  auto bad = run(client.watch("/w", kLimit, count));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::bad_request);
  EXPECT_THAT(bad.error().message, HasSubstr("malformed event (not JSON"));
  EXPECT_EQ(events, 1);
  EXPECT_EQ(server.connections, 3);  // a connection per watch
}

TEST_F(WatchClientTest, AWatchNotEndedWithinItsLimitFailsThoughEventsStillArrive) {
  // A bookmark every 50 ms, and never the end the watch's timeoutSeconds asked for.
  TlsServer server(ioc_, server_cert_, [](const Request&) { return std::nullopt; });
  server.stream_with([&](const Request&, TlsServer::Stream& s) -> task<void> {
    co_await write(s, kHead);
    for (int i = 0; i < 200; ++i) {
      co_await write(s, chunk(kBookmark));
      co_await sleep(s, std::chrono::milliseconds(50));
    }
  });
  Client client(cluster(server), ioc_.get_executor());
  int events = 0;
  const auto start = Clock::now();
  auto r = run(client.watch("/w", std::chrono::milliseconds(300), [&](WatchEvent&&) {
    ++events;
    return true;
  }));
  const auto took = Clock::now() - start;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::scaler_error);
  EXPECT_THAT(r.error().message,
              HasSubstr(": GET /w: timed out: the watch had not ended 300 ms after it was sent"));
  EXPECT_GE(events, 3);
  EXPECT_GE(took, std::chrono::milliseconds(300));
  EXPECT_LT(took, std::chrono::seconds(2));
}

TEST_F(WatchClientTest, CallbackStopsTheWatch) {
  TlsServer server(ioc_, server_cert_, [](const Request&) { return std::nullopt; });
  server.stream_with([&](const Request&, TlsServer::Stream& s) -> task<void> {
    co_await write(s, kHead);
    co_await write(s, chunk(kModified + kBookmark));
    co_await sleep(s, std::chrono::hours(1));
  });
  Client client(cluster(server), ioc_.get_executor());
  int events = 0;
  auto r = run(client.watch("/w", kLimit, [&](WatchEvent&&) {
    ++events;
    return false;
  }));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(events, 1);
}

TEST_F(WatchClientTest, CancellationEndsTheWatch) {
  TlsServer server(ioc_, server_cert_, [](const Request&) { return std::nullopt; });
  server.stream_with([&](const Request&, TlsServer::Stream& s) -> task<void> {
    co_await write(s, kHead);
    co_await write(s, chunk(kModified));
    co_await sleep(s, std::chrono::hours(1));
  });
  Client client(cluster(server), ioc_.get_executor());
  int events = 0;
  auto race = [&]() -> task<outcome<Response>> {
    using namespace net::experimental::awaitable_operators;
    Timer timer(ioc_, std::chrono::milliseconds(300));
    auto r = co_await (client.watch("/w", kLimit, [&](WatchEvent&&) {
      ++events;
      return true;
    }) || timer.async_wait(use_task));
    if (r.index() == 0) {
      co_return std::get<0>(std::move(r));
    }
    co_return Failure{errc::client_gone, "the timer won"};
  };
  const auto start = Clock::now();
  auto r = run(race());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::client_gone);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));  // the watch's read was cancelled
  EXPECT_EQ(events, 1);
}

TEST_F(WatchClientTest, ErrorAnswerIsAResponse) {
  const std::string gone =
      R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",)"
      R"j("message":"too old resource version: 1 (50300)","reason":"Expired","code":410})j";
  TlsServer server(ioc_, server_cert_,
                   [&](const Request&) { return reply(http::status::gone, gone); });
  Client client(cluster(server), ioc_.get_executor());
  int events = 0;
  auto r = run(client.watch("/w", kLimit, [&](WatchEvent&&) {
    ++events;
    return true;
  }));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 410u);
  EXPECT_EQ(r->body, gone);
  EXPECT_TRUE(is_expired_response(*r));
  EXPECT_EQ(events, 0);
  EXPECT_EQ(api_failure(http::verb::get, "/w", *r).message,
            "kubernetes API: GET /w: 410 Gone: too old resource version: 1 (50300)");
}

}  // namespace
}  // namespace va::k8s
