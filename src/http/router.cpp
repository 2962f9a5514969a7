#include "http/router.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <array>
#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>
#include <ctime>

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

Router::Router(std::vector<Entry> entries) : entries_(std::move(entries)) {
  for (const auto& e : entries_) {
    for (const auto& m : e.models) {
      by_model_.emplace(m, e.backend);
    }
    if (e.is_default) {
      default_ = e.backend;
    }
  }
}

outcome<Route> Router::route(std::string_view content_type, std::string_view body) const {
  auto model = extract_model(content_type, body);
  if (!model) {
    return model.error();
  }
  if (!model->has_value()) {
    if (default_ == nullptr) {
      return Failure{errc::unknown_model,
                     "the request names no model and no backend is marked default"};
    }
    return Route{default_, ""};
  }
  const auto it = by_model_.find(**model);
  if (it == by_model_.end()) {
    return Failure{errc::unknown_model, "The model `" + **model + "` does not exist."};
  }
  return Route{it->second, **model};
}

std::string Router::models_json() const {
  boost::json::array data;
  const auto created = static_cast<std::int64_t>(std::time(nullptr));
  for (const auto& e : entries_) {
    const auto state = e.backend->status().at("state");
    for (const auto& m : e.models) {
      data.push_back(boost::json::object{{"id", m},
                                         {"object", "model"},
                                         {"created", created},
                                         {"owned_by", "vllm"},
                                         {"root", m},
                                         {"backend", e.backend->name()},
                                         {"state", state}});
    }
  }
  return boost::json::serialize(boost::json::object{{"object", "list"}, {"data", data}});
}

}  // namespace va::front
