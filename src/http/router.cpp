#include "http/router.hpp"

#include <boost/json.hpp>
#include <ctime>

namespace va::front {

Router::Router(std::vector<Entry> entries) : entries_(std::move(entries)) {
  for (const auto& e : entries_) {
    for (const auto& m : e.models) {
      by_model_.emplace(m, e.backend);
    }
    if (e.is_default) {
      default_ = e.backend;
    }
  }
  if (entries_.size() == 1 && entries_.front().models.empty()) {
    any_model_ = entries_.front().backend;
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
    if (any_model_ != nullptr) {
      return Route{any_model_, **model};
    }
    return Failure{errc::unknown_model, "The model `" + **model + "` does not exist."};
  }
  return Route{it->second, **model};
}

std::string Router::models_json() const {
  boost::json::array data;
  const auto created = static_cast<std::int64_t>(std::time(nullptr));
  for (const auto& e : entries_) {
    const auto state = activator::name(e.backend->state());
    auto models = e.models;
    if (e.backend == any_model_) {
      // It serves whatever it has: what it listed itself when it was last up.
      for (auto& m : e.backend->reported_models()) {
        if (std::find(models.begin(), models.end(), m) == models.end()) {
          models.push_back(std::move(m));
        }
      }
    }
    for (const auto& m : models) {
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
