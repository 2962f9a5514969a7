#include "wire/wire.hpp"

#include <charconv>
#include <cstdint>
#include <vector>

namespace va::wire {
namespace {

// Chunks of `Size` bytes from a per-thread list that keeps at most `Keep` of them; more than
// that many in use at once are allocated and freed.
template <std::size_t Size, std::size_t Keep>
class Chunks {
 public:
  static std::unique_ptr<char[]> take() {
    auto& l = list();
    if (l.empty()) {
      return std::make_unique_for_overwrite<char[]>(Size);
    }
    auto p = std::move(l.back());
    l.pop_back();
    return p;
  }
  static void give(std::unique_ptr<char[]> p) {
    auto& l = list();
    if (p && l.size() < Keep) {
      l.push_back(std::move(p));
    }
  }

 private:
  static std::vector<std::unique_ptr<char[]>>& list() {
    thread_local std::vector<std::unique_ptr<char[]>> chunks;
    return chunks;
  }
};
// Enough for 256 exchanges in flight on a thread (two each): with 64 kept, 256 connections under
// load took 1.3 of them per request from malloc. The memory is the load's own, and glibc kept
// it too: after such a load RSS was 14.6 MiB with 512 kept against 18.1 with 64 (bench/README.md,
// "Eighth round").
using BlockChunks = Chunks<Block::kSize, 512>;
using ScratchChunks = Chunks<Scratch::kSize, 256>;

}  // namespace

void append_head(std::string& out, const http::response_header<>& h) {
  append_status_line(out, h);
  for (const auto& f : h) {
    append_field(out, f.name_string(), f.value());
  }
  out += "\r\n";
}

AtOnce write_at_once(Socket& to, std::span<const net::const_buffer> pieces) {
  AtOnce w;
  make_non_blocking(to, w.ec);
  if (!w.ec) {
    w.written = to.write_some(pieces, w.ec);
  }
  w.done = w.ec ? w.ec != net::error::would_block && w.ec != net::error::try_again
                : w.written == net::buffer_size(pieces);
  return w;
}

task<error_code> write_rest(Socket& to, std::span<const net::const_buffer> pieces,
                            std::size_t written) {
  beast::buffers_suffix<std::span<const net::const_buffer>> rest(pieces);
  rest.consume(written);
  auto [ec, n] = co_await net::async_write(to, rest, use_nothrow);
  co_return ec;
}

task<error_code> write(Socket& to, std::span<const net::const_buffer> pieces) {
  const auto w = write_at_once(to, pieces);
  if (w.done) {
    co_return w.ec;
  }
  co_return co_await write_rest(to, pieces, w.written);
}

task<error_code> write_rest(Socket& to, std::span<const net::const_buffer> pieces,
                            std::size_t written, const Patience& patience) {
  beast::buffers_suffix<std::span<const net::const_buffer>> rest(pieces);
  rest.consume(written);
  error_code ec;
  while (net::buffer_size(rest) > 0) {
    // (Moving it on is a clock read and a lock: the timer is set again only when it fires.)
    patience.deadline.watch(to, Clock::now() + patience.idle);
    auto [write_error, n] = co_await to.async_write_some(rest, use_nothrow);
    rest.consume(n);
    if (write_error) {
      ec = patience.deadline.explain(write_error);
      break;
    }
  }
  patience.deadline.pause();
  co_return ec;
}

task<error_code> write(Socket& to, std::span<const net::const_buffer> pieces,
                       const Patience& patience) {
  const auto w = write_at_once(to, pieces);
  if (w.done) {
    co_return w.ec;
  }
  co_return co_await write_rest(to, pieces, w.written, patience);
}

ChunkFrame::ChunkFrame(std::size_t n) {
  auto end = std::to_chars(size_line.data(), size_line.data() + size_line.size() - 2, n, 16).ptr;
  *end++ = '\r';
  *end++ = '\n';
  size_line_length = static_cast<std::size_t>(end - size_line.data());
}

Block::Block() : p_(BlockChunks::take()) {}

Block::~Block() { BlockChunks::give(std::move(p_)); }

Scratch::~Scratch() { ScratchChunks::give(std::move(chunk_)); }

void* Scratch::do_allocate(std::size_t bytes, std::size_t align) {
  if (!chunk_) {
    chunk_ = ScratchChunks::take();
  }
  const std::size_t at = (used_ + align - 1) & ~(align - 1);
  // A chunk begins at new[]'s alignment; a stricter one goes to the heap.
  if (align <= __STDCPP_DEFAULT_NEW_ALIGNMENT__ && at + bytes <= kSize) {
    used_ = at + bytes;
    return chunk_.get() + at;
  }
  return std::pmr::new_delete_resource()->allocate(bytes, align);
}

void Scratch::do_deallocate(void* p, std::size_t bytes, std::size_t align) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  const auto begin = reinterpret_cast<std::uintptr_t>(chunk_.get());
  if (chunk_ && at >= begin && at < begin + kSize) {
    return;  // given back with the chunk
  }
  std::pmr::new_delete_resource()->deallocate(p, bytes, align);
}

}  // namespace va::wire
