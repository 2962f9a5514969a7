#pragma once
// Which backend serves a request (DESIGN.md §1 step 3), which paths are public at all, and the
// API-key check that comes before any wake.
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "activator/backend.hpp"
#include "core/errors.hpp"

namespace va::front {

// Only these path prefixes are forwarded; vLLM's control plane (/sleep, /wake_up, /pause,
// /collective_rpc, /metrics, profiling, …) is never reachable through the public port.
bool is_exposed(std::string_view path);

// The `model` of a request body: the top-level JSON field, or the multipart form field `model`
// (for /v1/audio/*). nullopt when the body names none; bad_request for a malformed JSON body.
outcome<std::optional<std::string>> extract_model(std::string_view content_type,
                                                  std::string_view body);

// Constant-time check of `Authorization: Bearer <key>` (scheme case-insensitive) against `keys`.
bool authorized(std::string_view authorization, const std::vector<std::string>& keys);

struct Route {
  activator::Backend* backend = nullptr;
  std::string model;
};

class Router {
 public:
  struct Entry {
    activator::Backend* backend;
    std::vector<std::string> models;
    bool is_default;
  };
  explicit Router(std::vector<Entry> entries);

  outcome<Route> route(std::string_view content_type, std::string_view body) const;
  // The backend every request goes to when only one is configured: then the body is not needed
  // to route, and a large one can stream upstream while it arrives.
  activator::Backend* only_backend() const {
    return entries_.size() == 1 ? entries_.front().backend : nullptr;
  }
  // GET /v1/models: every configured model in OpenAI's list shape, with its backend's state.
  std::string models_json() const;

 private:
  std::vector<Entry> entries_;
  std::map<std::string, activator::Backend*, std::less<>> by_model_;
  activator::Backend* default_ = nullptr;
};

}  // namespace va::front
