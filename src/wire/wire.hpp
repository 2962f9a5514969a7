#pragma once
// The proxy's own HTTP/1.1 writing for the hot path. Beast's serializer presents a message as a
// buffer sequence of one piece per header field, and every write walks that sequence again: in a
// profile of the proxy under load, it cost more than the sockets themselves. Here a head is
// flattened into one string once, and a write is a plain gather write of a few buffers.
#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <memory_resource>
#include <span>
#include <string>

#include "core/deadline.hpp"
#include "core/net.hpp"

namespace va::wire {

// Memory for one request, from its head to its last byte: its fields, its body when small, the
// head sent upstream, the response's fields and the head sent to the client. A bump allocator over
// a 4 KiB chunk borrowed from a per-thread list at its first allocation (so an idle connection,
// whose next head has not begun, holds none) and given back with it; the heap past the chunk.
// Otherwise about fifteen small allocations per request, which under load outrun malloc's
// per-thread cache. Memory freed inside the chunk is reused only by the next request.
class Scratch final : public std::pmr::memory_resource {
 public:
  static constexpr std::size_t kSize = 4096;
  Scratch() = default;
  ~Scratch() override;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

 private:
  void* do_allocate(std::size_t bytes, std::size_t align) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t align) override;
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }
  std::unique_ptr<char[]> chunk_;
  std::size_t used_ = 0;
};
using Alloc = std::pmr::polymorphic_allocator<char>;
using Fields = http::basic_fields<Alloc>;

// Appends "HTTP/<major>.<minor>".
template <class String>
void append_version(String& out, unsigned version) {
  out += "HTTP/";
  const char digits[] = {static_cast<char>('0' + version / 10), '.',
                         static_cast<char>('0' + version % 10)};
  out.append(digits, sizeof digits);
}

// The pieces of a head written with changes, each with its CRLF: the request line, one field,
// the status line. For any string and fields types (those of a wire::Scratch included).
template <class String, class Header>
void append_request_line(String& out, const Header& h, unsigned version) {
  out += h.method_string();
  out += ' ';
  out += h.target();
  out += ' ';
  append_version(out, version);
  out += "\r\n";
}

// The separators go in with push_back: a two-byte append is a call to memcpy.
template <class String>
void append_field(String& out, std::string_view name, std::string_view value) {
  out.append(name.data(), name.size());
  out.push_back(':');
  out.push_back(' ');
  out.append(value.data(), value.size());
  out.push_back('\r');
  out.push_back('\n');
}

template <class String, class Header>
void append_status_line(String& out, const Header& h) {
  append_version(out, h.version());
  const auto status = h.result_int();
  const char digits[] = {' ', static_cast<char>('0' + status / 100 % 10),
                         static_cast<char>('0' + status / 10 % 10),
                         static_cast<char>('0' + status % 10), ' '};
  out.append(digits, sizeof digits);
  out += h.reason();
  out += "\r\n";
}

// The value of the first field named `name` (a known name, not field::unknown), or empty: a scan
// of the message's few fields by their enum. Beast's operator[] searches its ordered set instead,
// comparing names as text without case: 200 to 500 instructions a lookup, a tenth of a request's
// (bench/README.md, "Tenth round").
template <class Fields>
std::string_view field_value(const Fields& fields, http::field name) {
  for (const auto& f : fields) {
    if (f.name() == name) {
      return f.value();
    }
  }
  return {};
}

// Writes a head into `out` at a cursor: a piece is one memcpy, without the checks of size and
// capacity and the terminating NUL of each std::string append (a twentieth of a request's
// instructions; bench/README.md, "Tenth round"). `out` is sized once for `expected` bytes (see
// fields_size()), grows when a piece does not fit, and is cut to what was written when the writer
// goes. It takes the append_* functions above as a string does.
template <class String>
class HeadWriter {
 public:
  HeadWriter(String& out, std::size_t expected) : out_(out) {
    const auto at = out_.size();
    out_.resize(at + expected);
    point_at(at);
  }
  ~HeadWriter() { out_.resize(static_cast<std::size_t>(cur_ - out_.data())); }
  HeadWriter(const HeadWriter&) = delete;
  HeadWriter& operator=(const HeadWriter&) = delete;

  void append(const char* p, std::size_t n) {
    if (n > static_cast<std::size_t>(end_ - cur_)) {
      grow(n);
    }
    if (n != 0) {  // p may be null then
      std::memcpy(cur_, p, n);
      cur_ += n;
    }
  }
  void push_back(char c) {
    if (cur_ == end_) {
      grow(1);
    }
    *cur_++ = c;
  }
  HeadWriter& operator+=(std::string_view s) {
    append(s.data(), s.size());
    return *this;
  }
  HeadWriter& operator+=(char c) {
    push_back(c);
    return *this;
  }

 private:
  void point_at(std::size_t at) {
    cur_ = out_.data() + at;
    end_ = out_.data() + out_.size();
  }
  [[gnu::noinline]] void grow(std::size_t n) {
    const auto at = static_cast<std::size_t>(cur_ - out_.data());
    out_.resize(std::max(2 * out_.size(), at + n));
    point_at(at);
  }
  String& out_;
  char* cur_ = nullptr;
  char* end_ = nullptr;
};

// What `fields` take written as field lines: the size a HeadWriter expects for them.
template <class Fields>
std::size_t fields_size(const Fields& fields) {
  std::size_t n = 0;
  for (const auto& f : fields) {
    n += f.name_string().size() + f.value().size() + 4;
  }
  return n;
}

// Appends the status line, every field and the blank line to `out`.
void append_head(std::string& out, const http::response_header<>& h);

// Puts `s` in non-blocking mode (once), for the reads and writes tried without waiting.
inline void make_non_blocking(Socket& s, error_code& ec) {
  if (!s.non_blocking()) {
    s.non_blocking(true, ec);
  }
}

// A write tried at once, without waiting: `done` when nothing is left to wait for (all of it went,
// or `ec` ended it); otherwise `written` bytes went and write_rest() sends the others.
struct AtOnce {
  error_code ec;
  std::size_t written = 0;
  bool done = false;
};
// Puts the socket in non-blocking mode. The common case, when the socket's buffer has room, costs
// one sendmsg, no trip through the event loop and no coroutine frame: the hot path tries this
// first, then `if (!w.done) w.ec = co_await write_rest(...)`.
AtOnce write_at_once(Socket& to, std::span<const net::const_buffer> pieces);
task<error_code> write_rest(Socket& to, std::span<const net::const_buffer> pieces,
                            std::size_t written);

// Writes all of `pieces`: write_at_once(), then write_rest().
task<error_code> write(Socket& to, std::span<const net::const_buffer> pieces);

// How long a write to a peer that takes bytes slowly may make no progress (limits.send_timeout,
// towards the client), by the peer connection's own deadline: the time between two parts the
// socket took, never a limit on the whole write.
struct Patience {
  MovingDeadline& deadline;  // the connection's; watched only while a write waits, then paused
  Clock::duration idle;
};
// write_rest() within `patience`: each part the socket takes moves the deadline on; a write that
// makes no progress for `patience.idle` ends with net::error::timed_out. Only the writes that
// wait pay for it: the hot path tries write_at_once() first, as above. `patience` by reference:
// an argument by value would take room in the caller's coroutine frame, and answer()'s must stay
// within what Asio's frame cache recycles (bench/README.md, "Ninth round").
task<error_code> write_rest(Socket& to, std::span<const net::const_buffer> pieces,
                            std::size_t written, const Patience& patience);
// write_at_once(), then write_rest() within `patience`.
task<error_code> write(Socket& to, std::span<const net::const_buffer> pieces,
                       const Patience& patience);

// Lets the other connections run first: for a read of what the peer cannot have sent yet (the
// answer to what was just written). Read at once, it would fail, and that costs a syscall: Asio
// 1.26 marks a socket drained only after a 0-byte read, so it tries every read at once after any
// readiness event. By the time the others have run, a peer that answers at once has answered.
// Only worth it when there are others (InProgress): alone, the yield costs an epoll_wait, and the
// peer has not answered after it either.
inline task<void> let_others_run() { return net::post(use_task); }

// Counts the requests in progress on this thread, whose io_context runs nothing else: whether a
// yield (let_others_run) has anything to let run.
class InProgress {
 public:
  InProgress() { ++count_; }
  ~InProgress() { --count_; }
  InProgress(const InProgress&) = delete;
  InProgress& operator=(const InProgress&) = delete;
  // Whether requests other than the caller's own (`own`: it holds an InProgress) are in progress.
  static bool others(bool own) { return count_ > (own ? 1 : 0); }

 private:
  static inline thread_local int count_ = 0;
};

// What read() reads up to.
enum class Until {
  header,   // the whole head
  some,     // some progress: body bytes (into a buffer_body), or the end of the message
  message,  // the end of the message
};

inline error_code accept_any_head(std::string_view) { return {}; }
inline void no_action() {}

// Parses what `buf` holds into `p`, without reading: true when the read is over (`until` reached,
// or `ec` ended it), false when it needs more bytes from the socket. read() does this before each
// read; a caller that does it first needs no coroutine frame when the bytes are already here (a
// body that came with its head, an answer read with take_ready()).
//
// `check_head` sees the raw bytes of the head's field lines once they are all here, before they
// are consumed (with the start line before them when it came with them: Beast takes a whole start
// line at once, the fields only together), and may refuse the head with an error.
template <class Parser, class DynamicBuffer, class CheckHead = decltype(&accept_any_head)>
bool parse_buffered(DynamicBuffer& buf, Parser& p, Until until, error_code& ec,
                    CheckHead check_head = &accept_any_head) {
  ec = {};
  for (;;) {
    if (buf.size() == 0 || p.is_done()) {
      return p.is_done() || (until == Until::header && p.is_header_done());
    }
    const bool had_head = p.is_header_done();
    const auto n = p.put(buf.data(), ec);
    if (!had_head && p.is_header_done()) {
      // Beast parses the fields only once they are all in the buffer: these n bytes are the rest
      // of the head. (The flat buffers used here hold their bytes in one piece.)
      const auto bytes = buf.data();
      const net::const_buffer first = *net::buffer_sequence_begin(bytes);
      if (auto refused = check_head(std::string_view(static_cast<const char*>(first.data()),
                                                     std::min(n, first.size())))) {
        ec = refused;
        return true;
      }
    }
    buf.consume(n);
    if (ec && ec != http::error::need_more) {
      return true;  // need_buffer included: the caller makes room
    }
    ec = {};
    if (p.is_done() || (until == Until::header && p.is_header_done()) ||
        (until == Until::some && n > 0)) {
      return true;
    }
    if (n == 0) {
      return false;
    }
    // more of the message may be buffered already (the next chunk)
  }
}

// Beast's asynchronous HTTP reads, without their three layers of composed operations per read
// (and the completion they post when the bytes were already buffered): parse what `buf` holds,
// read from the socket only for more. The same rules: at most 64 KiB per read, an end of stream
// ends a message that has begun (or is end_of_stream), `buf`'s limit is buffer_overflow.
//
// `check_head` as for parse_buffered(). `before_read` is called before each read from the socket
// (one that may wait), never when the bytes are already buffered.
template <class Stream, class Parser, class DynamicBuffer,
          class CheckHead = decltype(&accept_any_head), class BeforeRead = decltype(&no_action)>
task<error_code> read(Stream& s, DynamicBuffer& buf, Parser& p, Until until,
                      CheckHead check_head = &accept_any_head,
                      BeforeRead before_read = &no_action) {
  for (;;) {
    error_code ec;
    if (parse_buffered(buf, p, until, ec, check_head)) {
      co_return ec;
    }
    const auto room = std::min(buf.max_size() - buf.size(), std::size_t{65536});
    const auto size = std::min(std::max<std::size_t>(512, buf.capacity() - buf.size()), room);
    if (size == 0) {
      co_return http::error::buffer_overflow;
    }
    before_read();
    auto [read_error, n] = co_await s.async_read_some(buf.prepare(size), use_nothrow);
    buf.commit(n);
    if (read_error == net::error::eof) {
      if (!p.got_some()) {
        co_return http::error::end_of_stream;
      }
      p.put_eof(ec);
      co_return ec;
    }
    if (read_error) {
      co_return read_error;
    }
  }
}

// True when a head has a field line folded onto the next (obs-fold, RFC 9112 §5.2): a line that
// begins with a space or tab. Beast joins such lines; a backend might not, and read a different
// request from the same bytes.
inline bool has_obs_fold(std::string_view head) {
  for (auto i = head.find('\n'); i != std::string_view::npos && i + 1 < head.size();
       i = head.find('\n', i + 1)) {
    if (head[i + 1] == ' ' || head[i + 1] == '\t') {
      return true;
    }
  }
  return false;
}

// One piece of a chunked body: "<size hex>\r\n" (the bytes go between) and the "\r\n" after.
struct ChunkFrame {
  std::array<char, 18> size_line{};
  std::size_t size_line_length = 0;
  explicit ChunkFrame(std::size_t n);
  net::const_buffer head() const { return net::buffer(size_line.data(), size_line_length); }
};
inline constexpr std::string_view kChunkEnd = "\r\n";
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

// A 16 KiB block for relaying bytes, from a small per-thread free list: a request borrows two and
// gives them back, so the hot path neither allocates them nor makes every idle connection carry
// them.
class Block {
 public:
  static constexpr std::size_t kSize = 16 * 1024;
  Block();
  ~Block();
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;
  char* data() { return p_.get(); }
  net::mutable_buffer buffer() { return net::buffer(p_.get(), kSize); }

 private:
  std::unique_ptr<char[]> p_;
};

}  // namespace va::wire
