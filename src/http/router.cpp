#include "http/router.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <array>
#include <boost/json.hpp>
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
  boost::json::monotonic_resource mr;
  auto v = boost::json::parse(boost::json::string_view(body.data(), body.size()), ec, &mr);
  if (ec) {
    return Failure{errc::bad_request, "request body is not valid JSON: " + ec.message()};
  }
  const auto* model = v.as_object().if_contains("model");
  if (model == nullptr || model->is_null()) {
    return std::optional<std::string>{};
  }
  if (!model->is_string()) {
    return Failure{errc::bad_request, "\"model\" must be a string"};
  }
  return std::optional<std::string>(std::string(model->get_string()));
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
