#include "core/wire.hpp"

#include <charconv>
#include <vector>

namespace va::wire {
namespace {

void append_fields(std::string& out, const http::fields& h) {
  for (const auto& f : h) {
    append_field(out, f.name_string(), f.value());
  }
  out += "\r\n";
}

void append_version(std::string& out, unsigned version) {
  out += "HTTP/";
  out += static_cast<char>('0' + version / 10);
  out += '.';
  out += static_cast<char>('0' + version % 10);
}

// Blocks kept per thread; more than this many in use at once are allocated and freed.
constexpr std::size_t kKeep = 64;

std::vector<std::unique_ptr<char[]>>& free_blocks() {
  thread_local std::vector<std::unique_ptr<char[]>> blocks;
  return blocks;
}

}  // namespace

void append_field(std::string& out, std::string_view name, std::string_view value) {
  out += name;
  out += ": ";
  out += value;
  out += "\r\n";
}

void append_request_line(std::string& out, const http::request_header<>& h, unsigned version) {
  out += h.method_string();
  out += ' ';
  out += h.target();
  out += ' ';
  append_version(out, version);
  out += "\r\n";
}

void append_status_line(std::string& out, const http::response_header<>& h) {
  append_version(out, h.version());
  const auto status = h.result_int();
  const char digits[] = {' ', static_cast<char>('0' + status / 100 % 10),
                         static_cast<char>('0' + status / 10 % 10),
                         static_cast<char>('0' + status % 10), ' '};
  out.append(digits, sizeof digits);
  out += h.reason();
  out += "\r\n";
}

void append_head(std::string& out, const http::response_header<>& h) {
  append_status_line(out, h);
  append_fields(out, h);
}

task<error_code> write(Socket& to, std::span<const net::const_buffer> pieces) {
  error_code ec;
  make_non_blocking(to, ec);
  std::size_t written = 0;
  if (!ec) {
    written = to.write_some(pieces, ec);
  }
  if (!ec && written == net::buffer_size(pieces)) {
    co_return ec;
  }
  if (ec && ec != net::error::would_block && ec != net::error::try_again) {
    co_return ec;
  }
  beast::buffers_suffix<std::span<const net::const_buffer>> rest(pieces);
  rest.consume(written);
  std::tie(ec, std::ignore) = co_await net::async_write(to, rest, use_nothrow);
  co_return ec;
}

ChunkFrame::ChunkFrame(std::size_t n) {
  auto end = std::to_chars(size_line.data(), size_line.data() + size_line.size() - 2, n, 16).ptr;
  *end++ = '\r';
  *end++ = '\n';
  size_line_length = static_cast<std::size_t>(end - size_line.data());
}

Block::Block() {
  auto& blocks = free_blocks();
  if (blocks.empty()) {
    p_ = std::make_unique_for_overwrite<char[]>(kSize);
  } else {
    p_ = std::move(blocks.back());
    blocks.pop_back();
  }
}

Block::~Block() {
  auto& blocks = free_blocks();
  if (p_ && blocks.size() < kKeep) {
    blocks.push_back(std::move(p_));
  }
}

}  // namespace va::wire
