#pragma once
// The problems a load finds, each with its key path, and where overridden values came from.
// Shared by the loader's parts (config/loader.cpp); not for use outside src/config.
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace va::config {

// Key paths: child("backends[0]", "name") == "backends[0].name"; element("models", 2) ==
// "models[2]". A child of "" is the key itself.
std::string child(const std::string& parent, std::string_view key);
std::string element(const std::string& parent, std::size_t i);

// Every problem found, in the order found. A path reported once is not reported again, so that a
// value that failed to decode is not also reported as missing or out of range by validation.
class Problems {
 public:
  void add(const std::string& path, std::string_view message);
  // Validation: skipped when `path` already has a problem. `shown` is the path as printed, which
  // names the flag or variable the value came from.
  void check(const std::string& path, const std::string& shown, std::string_view message);
  // Problems that already start with their (shown) path, as a ConfigError from elsewhere holds.
  void extend(const std::vector<std::string>& lines);
  bool empty() const { return list_.empty(); }
  const std::vector<std::string>& list() const { return list_; }

 private:
  std::set<std::string> reported_;
  std::vector<std::string> list_;
};

// Tracks which key paths were set by a flag or variable, so that problems name the source.
class Origins {
 public:
  void set(const std::string& path, const std::string& source) { sources_[path] = source; }
  // "listen (from --listen)" for an overridden path, else the path itself.
  std::string shown(const std::string& path) const;

 private:
  std::map<std::string, std::string> sources_;
};

}  // namespace va::config
