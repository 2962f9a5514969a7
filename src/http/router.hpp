#pragma once
// Which backend serves a request (docs/life-of-a-request.md), by the model its body names.
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "activator/backend.hpp"
#include "core/errors.hpp"
#include "http/request.hpp"

namespace va::front {

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

  // The backend whose `models` list the request's model; the default one for a request that names
  // none; the only backend for any model when it lists none. unknown_model otherwise.
  outcome<Route> route(std::string_view content_type, std::string_view body) const;
  // The backend every request goes to when only one is configured: then the body is not needed
  // to route, and a large one can stream upstream while it arrives.
  activator::Backend* only_backend() const {
    return entries_.size() == 1 ? entries_.front().backend : nullptr;
  }
  // GET /v1/models: every configured model in OpenAI's list shape, with its backend's state; for
  // a single backend with no `models`, the ones it listed itself when it was last up.
  std::string models_json() const;

 private:
  std::vector<Entry> entries_;
  std::map<std::string, activator::Backend*, std::less<>> by_model_;
  activator::Backend* default_ = nullptr;
  // The only backend, when it names no models: it serves every model a request names (the
  // backend answers one it does not have), as `--upstream URL` alone promises.
  activator::Backend* any_model_ = nullptr;
};

}  // namespace va::front
