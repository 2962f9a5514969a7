#pragma once
// What the floors (bench/floor/) share: their command line, and the message framing of the two
// that pass bytes on unchanged.
#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <iostream>
#include <string_view>
#include <utility>

namespace floor_proxy {

// LISTEN_PORT and UPSTREAM_PORT (127.0.0.1 both) from `name LISTEN_PORT UPSTREAM_PORT`; exits 2
// on any other command line.
inline std::pair<int, int> ports(int argc, char** argv, std::string_view name) {
  if (argc != 3) {
    std::cerr << "usage: " << name << " LISTEN_PORT UPSTREAM_PORT\n";
    std::exit(2);
  }
  return {std::atoi(argv[1]), std::atoi(argv[2])};
}

// The length of the first whole message in `b` (head and Content-Length body), or 0.
inline std::size_t message_length(std::string_view b) {
  const auto end = b.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    return 0;
  }
  std::size_t body = 0;
  for (auto at = b.find('\n'); at < end; at = b.find('\n', at + 1)) {
    constexpr std::string_view kName = "content-length:";
    const auto line = b.substr(at + 1, kName.size());
    if (line.size() == kName.size() && std::equal(line.begin(), line.end(), kName.begin(),
                                                  [](char x, char y) { return (x | 0x20) == y; })) {
      auto p = at + 1 + kName.size();
      while (b[p] == ' ') {
        ++p;
      }
      std::from_chars(b.data() + p, b.data() + end, body);
    }
  }
  const auto total = end + 4 + body;
  return b.size() >= total ? total : 0;
}

}  // namespace floor_proxy
