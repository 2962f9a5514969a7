#include "wire/wire.hpp"

#include <gtest/gtest.h>

#include <cstdint>

#include "unit/core/loopback.hpp"

namespace va::wire {
namespace {

TEST(AppendHead, WritesTheRequestLineAtTheGivenVersionThenEachField) {
  http::request_header<> h;
  h.method(http::verb::post);
  h.target("/v1/chat/completions?x=1");
  h.version(10);
  std::string out;
  append_request_line(out, h, 11);
  append_field(out, "X-Custom", "a, b");
  EXPECT_EQ(out, "POST /v1/chat/completions?x=1 HTTP/1.1\r\nX-Custom: a, b\r\n");
}

TEST(AppendHead, WritesTheStatusLineWithItsReason) {
  http::response_header<> h;
  h.result(http::status::service_unavailable);
  h.version(10);
  h.set(http::field::retry_after, "5");
  std::string out;
  append_head(out, h);
  EXPECT_EQ(out, "HTTP/1.0 503 Service Unavailable\r\nRetry-After: 5\r\n\r\n");
}

TEST(HeadWriter, WritesAtItsCursorThenCutsTheStringToWhatWasWritten) {
  http::request_header<> h;
  h.method(http::verb::get);
  h.target("/health");
  h.set(http::field::host, "x");
  h.set("X-Empty", "");
  std::string out = "kept|";
  {
    HeadWriter w(out, fields_size(h) + 64);
    EXPECT_EQ(out.size(), 5 + fields_size(h) + 64);  // sized once
    append_request_line(w, h, 11);
    for (const auto& f : h) {
      append_field(w, f.name_string(), f.value());
    }
    w += std::string_view();  // an empty piece (its data may be null)
    w += "\r\n";
  }
  EXPECT_EQ(out, "kept|GET /health HTTP/1.1\r\nHost: x\r\nX-Empty: \r\n\r\n");
  EXPECT_EQ(fields_size(h), std::string_view("Host: x\r\nX-Empty: \r\n").size());
}

TEST(HeadWriter, GrowsWhenAPieceDoesNotFitWhatItExpected) {
  const std::string big(5000, 'v');
  std::pmr::string out;
  {
    HeadWriter w(out, 8);
    w += "ab";
    append_field(w, "X-Big", big);  // past the 8 bytes expected, and past twice that
    for (int i = 0; i < 3; ++i) {
      w.push_back('0' + i);  // each at the end of what grew
    }
  }
  EXPECT_EQ(std::string_view(out), "abX-Big: " + big + "\r\n012");
}

TEST(ChunkFrame, WritesTheSizeInHex) {
  const auto text = [](const ChunkFrame& f) {
    return std::string(static_cast<const char*>(f.head().data()), f.head().size());
  };
  EXPECT_EQ(text(ChunkFrame(0)), "0\r\n");
  EXPECT_EQ(text(ChunkFrame(255)), "ff\r\n");
  EXPECT_EQ(text(ChunkFrame(16384)), "4000\r\n");
}

TEST(Block, ReusesFreedBlocksOnTheSameThread) {
  char* first = nullptr;
  {
    Block b;
    first = b.data();
  }
  Block again;
  EXPECT_EQ(again.data(), first);
  Block other;
  EXPECT_NE(other.data(), first);
}

bool within(const void* p, const void* begin, std::size_t size) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  const auto b = reinterpret_cast<std::uintptr_t>(begin);
  return at >= b && at < b + size;
}

TEST(Scratch, AllocatesOneRequestFromOneChunkAlignedAndThePastFromTheHeap) {
  Scratch s;
  auto* first = static_cast<char*>(s.allocate(1, 1));
  auto* second = s.allocate(24, 8);
  auto* third = s.allocate(100, 16);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(second) % 8, 0U);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(third) % 16, 0U);
  EXPECT_TRUE(within(second, first, Scratch::kSize));
  EXPECT_TRUE(within(third, first, Scratch::kSize));
  // What does not fit comes from the heap and goes back to it (ASan checks both ways).
  auto* big = static_cast<char*>(s.allocate(Scratch::kSize, 8));
  EXPECT_FALSE(within(big, first, Scratch::kSize));
  big[Scratch::kSize - 1] = 'x';
  s.deallocate(big, Scratch::kSize, 8);
  s.deallocate(third, 100, 16);  // inside the chunk: given back with it
}

TEST(Scratch, TakesAChunkOnlyAtItsFirstAllocationAndGivesItBackOnTheSameThread) {
  void* first = nullptr;
  {
    Scratch s;
    first = s.allocate(8, 8);
  }
  const Scratch idle;  // never allocates: takes no chunk
  Scratch again;
  EXPECT_EQ(again.allocate(8, 8), first);
}

TEST(Scratch, HoldsAParsedHeadAndAStringInItsChunk) {
  Scratch s;
  const Alloc alloc(&s);
  http::request_parser<http::empty_body, Alloc> p(std::piecewise_construct, std::make_tuple(),
                                                  std::make_tuple(alloc));
  const std::string_view head =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
      "X-Request-Id: 0123456789abcdef\r\nContent-Length: 2\r\n\r\n";
  error_code ec;
  p.put(net::buffer(head), ec);
  ASSERT_FALSE(ec);
  ASSERT_TRUE(p.is_header_done());
  const auto& h = p.get();
  const auto* base = h.target().data();  // the first allocation: where the chunk begins
  std::pmr::string out(h.get_allocator());
  append_request_line(out, h, 11);
  for (const auto& f : h) {
    EXPECT_TRUE(within(f.value().data(), base, Scratch::kSize)) << f.name_string();
    append_field(out, f.name_string(), f.value());
  }
  EXPECT_TRUE(within(out.data(), base, Scratch::kSize));
  EXPECT_EQ(out.substr(0, 36), "POST /v1/chat/completions HTTP/1.1\r\n");
}

// `peer` is written to by the test, `ours` is read by wire::read.
struct Pair : LoopbackPair {
  void send(std::string_view bytes) { net::write(peer, net::buffer(bytes)); }
  template <class T>
  T run(task<T> t) {
    std::optional<T> result;
    net::co_spawn(ioc, std::move(t), [&](std::exception_ptr e, T r) {
      if (e) {
        std::rethrow_exception(e);
      }
      result = std::move(r);
    });
    ioc.restart();
    ioc.run();
    return *result;
  }
};

TEST(Read, StopsAfterTheHeadAndLeavesTheBodyInTheBuffer) {
  Pair pair;
  pair.send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
  beast::flat_buffer buf;
  http::response_parser<http::string_body> p;
  EXPECT_FALSE(pair.run(wire::read(pair.ours, buf, p, Until::header)));
  EXPECT_TRUE(p.is_header_done());
  EXPECT_EQ(p.get().result_int(), 200u);
  // The body came with the head: parsed from the buffer (the peer sends nothing more).
  EXPECT_FALSE(pair.run(wire::read(pair.ours, buf, p, Until::some)));
  EXPECT_TRUE(p.is_done());
  EXPECT_EQ(p.get().body(), "hello");
}

TEST(Read, RelaysAChunkedBodyPieceByPieceAndKeepsWhatFollows) {
  Pair pair;
  pair.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
  beast::flat_buffer buf;
  http::response_parser<http::buffer_body> p;
  ASSERT_FALSE(pair.run(wire::read(pair.ours, buf, p, Until::header)));
  std::string body;
  std::array<char, 3> room;  // smaller than a chunk: need_buffer, then the rest
  int reads = 0;
  while (!p.is_done()) {
    if (reads == 2) {
      pair.send("6\r\n world\r\n0\r\n\r\nHTTP/1.1 204");  // the next response begins
    }
    p.get().body().data = room.data();
    p.get().body().size = room.size();
    auto ec = pair.run(wire::read(pair.ours, buf, p, Until::some));
    if (ec == http::error::need_buffer) {
      ec = {};
    }
    ASSERT_FALSE(ec) << ec.message();
    body.append(room.data(), room.size() - p.get().body().size);
    ++reads;
  }
  EXPECT_EQ(body, "hello world");
  EXPECT_EQ(beast::buffers_to_string(buf.data()), "HTTP/1.1 204");
}

TEST(Read, ReadsAWholeChunkedMessageThatIsAlreadyBufferedWithoutWaiting) {
  Pair pair;
  // Every chunk arrives in one piece: the read must parse them all from the buffer, not read the
  // socket again after the first (where it would find the end of stream: a partial message).
  pair.send(
      "POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3;x=1\r\nabc\r\n2\r\nde\r\n1\r\nf\r\n0\r\nX-T: 1\r\n\r\nGET");
  pair.peer.shutdown(Socket::shutdown_send);
  beast::flat_buffer buf;
  http::request_parser<http::string_body> p;
  ASSERT_FALSE(pair.run(wire::read(pair.ours, buf, p, Until::message)));
  EXPECT_TRUE(p.is_done());
  EXPECT_EQ(p.get().body(), "abcdef");
  EXPECT_EQ(beast::buffers_to_string(buf.data()), "GET");
}

TEST(Read, AnEndOfStreamMidBodyIsAPartialMessage) {
  Pair pair;
  pair.send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel");
  pair.peer.shutdown(Socket::shutdown_send);
  beast::flat_buffer buf;
  http::response_parser<http::string_body> p;
  ASSERT_FALSE(pair.run(wire::read(pair.ours, buf, p, Until::header)));
  error_code ec;
  while (!ec && !p.is_done()) {
    ec = pair.run(wire::read(pair.ours, buf, p, Until::some));
  }
  EXPECT_EQ(ec, http::error::partial_message);
}

TEST(Read, AnEndOfStreamBeforeAnyByteIsEndOfStream) {
  Pair pair;
  pair.peer.shutdown(Socket::shutdown_send);
  beast::flat_buffer buf;
  http::request_parser<http::empty_body> p;
  EXPECT_EQ(pair.run(wire::read(pair.ours, buf, p, Until::header)), http::error::end_of_stream);
}

TEST(Read, AHeadBeyondTheParsersLimitFails) {
  Pair pair;
  pair.send("GET / HTTP/1.1\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n");
  beast::flat_buffer buf;
  http::request_parser<http::empty_body> p;
  p.header_limit(1024);
  EXPECT_EQ(pair.run(wire::read(pair.ours, buf, p, Until::header)), http::error::header_limit);
}

TEST(ParseBuffered, ParsesWhatIsBufferedAndSaysWhenTheSocketMustBeRead) {
  beast::flat_buffer buf;
  http::request_parser<http::string_body> p;
  error_code ec;
  EXPECT_FALSE(parse_buffered(buf, p, Until::header, ec));  // nothing yet: read the socket
  EXPECT_FALSE(ec);
  const auto put = [&buf](std::string_view bytes) {
    buf.commit(net::buffer_copy(buf.prepare(bytes.size()), net::buffer(bytes)));
  };
  const std::string_view half = "POST /v1/completions HTTP/1.1\r\nContent-Len";
  put(half);
  EXPECT_FALSE(parse_buffered(buf, p, Until::header, ec));  // half a head: read for the rest
  EXPECT_FALSE(ec);
  EXPECT_FALSE(p.is_header_done());
  put("gth: 4\r\n\r\nab");
  EXPECT_TRUE(parse_buffered(buf, p, Until::header, ec));
  EXPECT_FALSE(ec);
  EXPECT_TRUE(p.is_header_done());
  EXPECT_EQ(p.get().target(), "/v1/completions");            // nothing of the first half was lost
  EXPECT_FALSE(parse_buffered(buf, p, Until::message, ec));  // half the body: read for the rest
  EXPECT_FALSE(ec);
  put("cdGET");
  EXPECT_TRUE(parse_buffered(buf, p, Until::message, ec));
  EXPECT_FALSE(ec);
  EXPECT_EQ(p.get().body(), "abcd");
  EXPECT_EQ(beast::buffers_to_string(buf.data()), "GET");  // the next request stays
}

TEST(ParseBuffered, EndsWithTheHeadChecksRefusalOrTheParsersError) {
  beast::flat_buffer buf;
  const std::string_view head = "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n";
  buf.commit(net::buffer_copy(buf.prepare(head.size()), net::buffer(head)));
  http::request_parser<http::empty_body> p;
  error_code ec;
  std::string seen;
  const auto refuse = [&seen](std::string_view raw) {
    seen = raw;
    return error_code(http::error::bad_field);
  };
  EXPECT_TRUE(parse_buffered(buf, p, Until::header, ec, refuse));
  EXPECT_EQ(ec, http::error::bad_field);
  EXPECT_EQ(seen, head);  // the raw head, whole

  beast::flat_buffer bad;
  const std::string_view garbage = "GET / HTTP/1.1\r\nX A: 1\r\n\r\n";
  bad.commit(net::buffer_copy(bad.prepare(garbage.size()), net::buffer(garbage)));
  http::request_parser<http::empty_body> q;
  EXPECT_TRUE(parse_buffered(bad, q, Until::header, ec));
  EXPECT_EQ(ec, http::error::bad_field);
}

TEST(Write, AtOnceWhatTheSocketTakesThenTheRestWhenItDrains) {
  Pair pair;
  const std::array<net::const_buffer, 1> small = {net::buffer(std::string_view("hello"))};
  const auto w = write_at_once(pair.ours, small);
  EXPECT_TRUE(w.done);
  EXPECT_FALSE(w.ec);
  EXPECT_EQ(w.written, 5u);
  std::array<char, 5> got;
  net::read(pair.peer, net::buffer(got));
  EXPECT_EQ(std::string_view(got.data(), got.size()), "hello");

  const std::string big(16 << 20, 'x');  // more than the socket's buffers take at once
  const std::array<net::const_buffer, 1> pieces = {net::buffer(big)};
  const auto part = write_at_once(pair.ours, pieces);
  ASSERT_FALSE(part.done);  // nothing waited: the rest is for write_rest()
  EXPECT_FALSE(part.ec);
  EXPECT_LT(part.written, big.size());
  std::size_t received = 0;
  net::co_spawn(
      pair.ioc,
      [&]() -> task<void> {
        std::array<char, 65536> chunk;
        while (received < big.size()) {
          auto [ec, n] = co_await pair.peer.async_read_some(net::buffer(chunk), use_nothrow);
          if (ec) {
            break;
          }
          received += n;
        }
      },
      net::detached);
  EXPECT_FALSE(pair.run(write_rest(pair.ours, pieces, part.written)));
  pair.ioc.restart();
  pair.ioc.run();
  EXPECT_EQ(received, big.size());

  pair.peer.close();
  pair.ours.shutdown(Socket::shutdown_send);
  const auto failed = write_at_once(pair.ours, small);  // an error ends it: nothing to wait for
  EXPECT_TRUE(failed.done);
  EXPECT_TRUE(failed.ec);
}

TEST(Write, WritesEveryPieceInOrder) {
  Pair pair;
  const std::string big(1 << 20, 'x');  // more than the socket takes at once
  const std::array<net::const_buffer, 3> pieces = {net::buffer(std::string_view("head|")),
                                                   net::buffer(big),
                                                   net::buffer(std::string_view("|tail"))};
  std::string received;
  net::co_spawn(
      pair.ioc,
      [&]() -> task<void> {
        std::array<char, 65536> chunk;
        while (received.size() < big.size() + 10) {
          auto [ec, n] = co_await pair.peer.async_read_some(net::buffer(chunk), use_nothrow);
          if (ec) {
            break;
          }
          received.append(chunk.data(), n);
        }
      },
      net::detached);
  EXPECT_FALSE(pair.run(wire::write(pair.ours, pieces)));
  pair.ioc.restart();
  pair.ioc.run();
  ASSERT_EQ(received.size(), big.size() + 10);
  EXPECT_EQ(received.substr(0, 5), "head|");
  EXPECT_EQ(received.substr(received.size() - 5), "|tail");
}

}  // namespace
}  // namespace va::wire
