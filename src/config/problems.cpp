#include "config/problems.hpp"

namespace va::config {

std::string child(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

std::string element(const std::string& parent, std::size_t i) {
  return parent + "[" + std::to_string(i) + "]";
}

void Problems::add(const std::string& path, std::string_view message) {
  reported_.insert(path);
  list_.push_back(path + ": " + std::string(message));
}

void Problems::check(const std::string& path, const std::string& shown, std::string_view message) {
  if (!reported_.contains(path)) {
    reported_.insert(path);
    list_.push_back(shown + ": " + std::string(message));
  }
}

void Problems::extend(const std::vector<std::string>& lines) {
  list_.insert(list_.end(), lines.begin(), lines.end());
}

std::string Origins::shown(const std::string& path) const {
  const auto it = sources_.find(path);
  return it == sources_.end() ? path : path + " (from " + it->second + ")";
}

}  // namespace va::config
