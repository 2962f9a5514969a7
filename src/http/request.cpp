#include "http/request.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <array>
#include <boost/json/basic_parser_impl.hpp>

namespace va::front {
namespace {

constexpr std::string_view kExposed[] = {"/v1/",         "/v2/",      "/tokenize", "/detokenize",
                                         "/pooling",     "/classify", "/score",    "/rerank",
                                         "/invocations", "/version"};

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Finds the top-level "model" of a JSON object while checking the whole document, without
// building it: a prompt of any size costs one pass and no allocation.
class ModelFinder {
 public:
  using ec_t = boost::system::error_code;
  using sv = boost::json::string_view;
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);

  enum class Found { none, null, string, other };
  Found found = Found::none;
  std::string model;

  bool on_document_begin(ec_t&) { return true; }
  bool on_document_end(ec_t&) { return true; }
  bool on_object_begin(ec_t&) { return enter(); }
  bool on_object_end(std::size_t, ec_t&) { return leave(); }
  bool on_array_begin(ec_t&) { return enter(); }
  bool on_array_end(std::size_t, ec_t&) { return leave(); }
  bool on_key_part(sv s, std::size_t, ec_t&) {
    if (depth_ == 1) {
      key_.append(s.data(), s.size());
    }
    return true;
  }
  bool on_key(sv s, std::size_t, ec_t&) {
    if (depth_ == 1) {
      key_.append(s.data(), s.size());
      at_model_ = key_ == "model";
      key_.clear();
    }
    return true;
  }
  bool on_string_part(sv s, std::size_t, ec_t&) {
    if (depth_ == 1 && at_model_) {
      part_.append(s.data(), s.size());
    }
    return true;
  }
  bool on_string(sv s, std::size_t, ec_t&) {
    if (depth_ == 1 && at_model_) {
      part_.append(s.data(), s.size());
      model = std::move(part_);
      part_.clear();
    }
    return value(Found::string);
  }
  bool on_number_part(sv, ec_t&) { return true; }
  bool on_int64(std::int64_t, sv, ec_t&) { return value(Found::other); }
  bool on_uint64(std::uint64_t, sv, ec_t&) { return value(Found::other); }
  bool on_double(double, sv, ec_t&) { return value(Found::other); }
  bool on_bool(bool, ec_t&) { return value(Found::other); }
  bool on_null(ec_t&) { return value(Found::null); }
  bool on_comment_part(sv, ec_t&) { return true; }
  bool on_comment(sv, ec_t&) { return true; }

 private:
  bool enter() {
    value(Found::other);  // an object or array as the model's value
    ++depth_;
    return true;
  }
  bool leave() {
    --depth_;
    return true;
  }
  // A value ends: at the top level after "model", it is the model's (the last one wins).
  bool value(Found kind) {
    if (depth_ == 1 && at_model_) {
      found = kind;
      at_model_ = false;
    }
    return true;
  }
  int depth_ = 0;
  bool at_model_ = false;
  std::string key_;
  std::string part_;
};

std::optional<std::string> multipart_boundary(std::string_view content_type) {
  const auto pos = content_type.find("boundary=");
  if (pos == std::string_view::npos) {
    return std::nullopt;
  }
  auto b = content_type.substr(pos + 9);
  b = b.substr(0, b.find(';'));
  if (b.size() >= 2 && b.front() == '"' && b.back() == '"') {
    b = b.substr(1, b.size() - 2);
  }
  return b.empty() ? std::nullopt : std::optional<std::string>(b);
}

std::optional<std::string> multipart_field(std::string_view body, std::string_view boundary,
                                           std::string_view field) {
  const std::string delim = "--" + std::string(boundary);
  const std::string want = "name=\"" + std::string(field) + "\"";
  std::size_t pos = body.find(delim);
  while (pos != std::string_view::npos) {
    const auto head_start = pos + delim.size();
    const auto head_end = body.find("\r\n\r\n", head_start);
    if (head_end == std::string_view::npos) {
      return std::nullopt;
    }
    const auto next = body.find(delim, head_end);
    const auto headers = body.substr(head_start, head_end - head_start);
    if (headers.find(want) != std::string_view::npos) {
      auto value = body.substr(
          head_end + 4, (next == std::string_view::npos ? body.size() : next) - head_end - 4);
      if (value.ends_with("\r\n")) {
        value.remove_suffix(2);
      }
      return std::string(value);
    }
    pos = next;
  }
  return std::nullopt;
}

std::array<unsigned char, SHA256_DIGEST_LENGTH> digest(std::string_view s) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> out{};
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), out.data());
  return out;
}

}  // namespace

bool is_exposed(std::string_view path) {
  for (auto prefix : kExposed) {
    if (prefix.back() == '/') {
      if (path.starts_with(prefix)) {
        return true;
      }
    } else if (path.starts_with(prefix) &&
               (path.size() == prefix.size() || path[prefix.size()] == '/')) {
      // "/tokenize" and friends: the resource itself or a path below it, not "/tokenizer".
      return true;
    }
  }
  return false;
}

outcome<std::optional<std::string>> extract_model(std::string_view content_type,
                                                  std::string_view body) {
  if (content_type.starts_with("multipart/form-data")) {
    const auto boundary = multipart_boundary(content_type);
    if (!boundary) {
      return Failure{errc::bad_request, "multipart body without a boundary"};
    }
    return multipart_field(body, *boundary, "model");
  }
  const auto first = body.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) {
    return std::optional<std::string>{};
  }
  if (body[first] != '{') {
    // Not a JSON object: nothing to route on (the backend judges the body).
    return std::optional<std::string>{};
  }
  boost::system::error_code ec;
  boost::json::basic_parser<ModelFinder> parser{boost::json::parse_options{}};
  const auto used = parser.write_some(false, body.data(), body.size(), ec);
  if (!ec && body.find_first_not_of(" \t\r\n", used) != std::string_view::npos) {
    ec = boost::json::error::extra_data;  // what boost::json::parse() says
  }
  if (ec) {
    return Failure{errc::bad_request, "request body is not valid JSON: " + ec.message()};
  }
  auto& found = parser.handler();
  switch (found.found) {
    case ModelFinder::Found::none:
    case ModelFinder::Found::null:
      return std::optional<std::string>{};
    case ModelFinder::Found::other:
      return Failure{errc::bad_request, "\"model\" must be a string"};
    case ModelFinder::Found::string:
      break;
  }
  return std::optional<std::string>(std::move(found.model));
}

bool authorized(std::string_view authorization, const std::vector<std::string>& keys) {
  const auto space = authorization.find(' ');
  if (space == std::string_view::npos || !iequals(authorization.substr(0, space), "bearer")) {
    return false;
  }
  auto token = authorization.substr(space + 1);
  while (!token.empty() && token.front() == ' ') {
    token.remove_prefix(1);
  }
  // Hashing first makes the comparison independent of the key's length and content.
  const auto given = digest(token);
  bool ok = false;
  for (const auto& key : keys) {
    const auto want = digest(key);
    ok |= CRYPTO_memcmp(given.data(), want.data(), given.size()) == 0;
  }
  return ok;
}

std::string_view path_of(std::string_view target) { return target.substr(0, target.find('?')); }

std::size_t buffer_limit(const config::Limits& limits) {
  return limits.max_header_bytes + 64 * 1024;
}

void prepare_head(HeadParser& head, const config::Limits& limits) {
  head.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
  head.body_limit(limits.max_body_bytes);
}

namespace {

// The read ended because the client closed or reset the connection: nobody to answer.
bool client_left(error_code ec) {
  return ec == http::error::end_of_stream || ec == net::error::eof ||
         ec == net::error::connection_reset || ec == net::error::operation_aborted;
}

Refusal too_large() { return Refusal{413, "request body exceeds limits.max_body_bytes"}; }

}  // namespace

std::optional<Refusal> head_failure(error_code ec, bool folded, bool timed_out, bool got_some) {
  if (folded) {
    return Refusal{400, "malformed request: a header line is folded (obs-fold, RFC 9112 §5.2)"};
  }
  if (timed_out) {
    if (!got_some) {
      return std::nullopt;
    }
    return Refusal{408, "request head not received within limits.header_timeout"};
  }
  if (ec == http::error::header_limit) {
    return Refusal{431, "request headers exceed limits.max_header_bytes"};
  }
  if (ec == http::error::body_limit) {
    return too_large();
  }
  if (client_left(ec)) {
    return std::nullopt;
  }
  return Refusal{400, "malformed request: " + ec.message()};
}

std::optional<Refusal> unusable_head(const HeadParser& head) {
  // A Transfer-Encoding other than chunked leaves the body's length unknown (RFC 9112 §6.3):
  // the parser would take it as empty and its bytes as the next request.
  if (const auto te = wire::field_value(head.get(), http::field::transfer_encoding);
      !te.empty() && !iequals(te, "chunked")) {
    return Refusal{400, "malformed request: unsupported Transfer-Encoding"};
  }
  return std::nullopt;
}

void prepare_body(BodyParser& body, const config::Limits& limits) {
  // Beast keeps a reference to the callback: it must outlive the parser.
  static auto check_extension = [](std::uint64_t, std::string_view extensions, error_code& ec) {
    constexpr std::size_t kMaxChunkExtension = 4096;
    if (extensions.size() > kMaxChunkExtension) {
      ec = http::error::bad_chunk_extension;
    }
  };
  body.body_limit(limits.max_body_bytes);
  body.on_chunk_header(check_extension);
}

std::optional<Refusal> body_failure(error_code ec, bool timed_out) {
  if (timed_out) {
    return Refusal{408, "request body not received within limits.header_timeout (at least 60s)"};
  }
  if (ec == http::error::body_limit) {
    return too_large();
  }
  if (client_left(ec)) {
    return std::nullopt;
  }
  return Refusal{400, "malformed request body: " + ec.message()};
}

config::Duration body_timeout(const config::Limits& limits) {
  return std::max<config::Duration>(limits.header_timeout, std::chrono::seconds(60));
}

std::optional<std::uint64_t> upstream_length(const Request& req) {
  const auto m = req.method();
  if (!req.body().empty() || m == http::verb::post || m == http::verb::put ||
      m == http::verb::options || m == http::verb::patch) {
    return req.body().size();
  }
  return std::nullopt;
}

}  // namespace va::front
