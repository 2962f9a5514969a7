#include "upstream/heads.hpp"

#include <algorithm>
#include <boost/container/small_vector.hpp>
#include <string>

#include "wire/hop_by_hop.hpp"

namespace va::upstream {
namespace {

// The names a message's Connection headers nominate (RFC 9110 §7.6.1; a message may have more
// than one), split once: each field of the message is checked against them, and Beast's
// token_list would parse the lists again for each (bench/README.md, "Tenth round"). Up to eight
// are kept in place; a longer list spills to the heap.
class Nominated {
 public:
  explicit Nominated(const wire::Fields& fields) {
    for (const auto& f : fields) {
      if (f.name() == http::field::connection) {
        for (const auto token : http::token_list(f.value())) {
          tokens_.emplace_back(token.data(), token.size());
        }
      }
    }
  }
  bool contains(std::string_view name) const {
    return std::any_of(tokens_.begin(), tokens_.end(),
                       [name](std::string_view t) { return beast::iequals(t, name); });
  }

 private:
  boost::container::small_vector<std::string_view, 8> tokens_;
};

// A field that applies to one connection only (RFC 9110 §7.6.1): the fixed list, and those the
// message's own Connection header names. A Connection header may not nominate the message's
// framing or Host away: that would let a client make the upstream read its body as further
// requests (callers handle those three before asking).
template <class Field>
bool hop_by_hop(const Field& f, const Nominated& nominated) {
  return wire::is_hop_by_hop(f.name()) || nominated.contains(f.name_string());
}

// Whether the backend's upstream_headers set a field named `name` (the client's is dropped).
bool replaced(const Target& t, beast::string_view name) {
  return std::any_of(t.headers.begin(), t.headers.end(),
                     [&](const auto& h) { return beast::iequals(h.first, name); });
}

}  // namespace

std::pmr::string upstream_head(const http::request_header<wire::Fields>& req, const Target& t,
                               std::string_view client_address,
                               std::optional<std::uint64_t> content_length) {
  std::pmr::string out(req.get_allocator());
  {  // the writer cuts `out` to its size when it goes
    // Room for what is kept and for the fields added below; the rest grows.
    wire::HeadWriter w(out, wire::fields_size(req) + req.target().size() + t.host_header.size() +
                                client_address.size() + 160);
    wire::append_request_line(w, req, 11);
    const Nominated nominated(req);
    bool upgrade = false;
    std::optional<std::string_view> host;
    std::pmr::string xff(out.get_allocator());
    for (const auto& f : req) {
      const auto name = f.name_string();
      if (!t.headers.empty() && replaced(t, name)) {
        continue;
      }
      switch (f.name()) {
        case http::field::host:
          host = f.value();
          continue;
        case http::field::content_length:
        case http::field::transfer_encoding:
          continue;  // the framing is written below
        case http::field::upgrade:
          upgrade = true;
          break;  // kept: a tunnel needs it
        case http::field::unknown:
          if (beast::iequals(name, "x-forwarded-for")) {
            xff += xff.empty() ? "" : ", ";
            xff += f.value();
            continue;
          }
          if (beast::iequals(name, "x-forwarded-proto") ||
              beast::iequals(name, "x-forwarded-host")) {
            continue;
          }
          [[fallthrough]];
        default:
          if (hop_by_hop(f, nominated)) {
            continue;
          }
      }
      wire::append_field(w, name, f.value());
    }
    for (const auto& [name, value] : t.headers) {
      wire::append_field(w, name, value);
    }
    wire::append_field(w, "Host", t.host_header);
    if (host) {
      wire::append_field(w, "X-Forwarded-Host", *host);
    }
    xff += xff.empty() ? "" : ", ";
    xff += client_address;
    wire::append_field(w, "X-Forwarded-For", xff);
    wire::append_field(w, "X-Forwarded-Proto", "http");
    if (upgrade) {
      wire::append_field(w, "Connection", "upgrade");
    }
    if (content_length) {
      wire::append_field(w, "Content-Length", std::to_string(*content_length));
    }
    w += "\r\n";
  }
  return out;
}

std::pmr::string client_head(const http::response_header<wire::Fields>& res, bool switching,
                             bool chunked, bool keep_alive, std::optional<double> wake_ms) {
  std::pmr::string out(res.get_allocator());
  {  // the writer cuts `out` to its size when it goes
    // Room for the upstream's fields and those added below; the rest grows.
    wire::HeadWriter w(out, wire::fields_size(res) + res.reason().size() + 96);
    wire::append_status_line(w, res);
    const Nominated nominated(res);
    for (const auto& f : res) {
      if (!switching) {
        const auto n = f.name();
        if (n == http::field::transfer_encoding) {
          continue;  // written below
        }
        if (n != http::field::content_length && n != http::field::host &&
            hop_by_hop(f, nominated)) {
          continue;
        }
      }
      wire::append_field(w, f.name_string(), f.value());
    }
    if (!switching) {
      if (chunked) {
        wire::append_field(w, "Transfer-Encoding", "chunked");
      }
      // As Beast's keep_alive() writes it: 1.1 closes by saying so, 1.0 keeps by saying so.
      if (res.version() >= 11 && !keep_alive) {
        wire::append_field(w, "Connection", "close");
      } else if (res.version() < 11 && keep_alive) {
        wire::append_field(w, "Connection", "keep-alive");
      }
    }
    if (wake_ms) {
      wire::append_field(w, "Server-Timing",
                         "wake;dur=" + std::to_string(static_cast<long long>(*wake_ms)));
    }
    w += "\r\n";
  }
  return out;
}

}  // namespace va::upstream
