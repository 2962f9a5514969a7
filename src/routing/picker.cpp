#include "routing/picker.hpp"

#include <algorithm>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cmath>
#include <string>

#include "core/log.hpp"

namespace va::routing {

namespace {

// splitmix64's finaliser: FNV-1a alone leaves the high bits of short, similar keys alike.
std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// Appends up to what `limit` leaves of `text` to `out`; false once `out` is full.
bool append_capped(std::string& out, std::string_view text, std::size_t limit) {
  out.append(text.substr(0, limit - std::min(limit, out.size())));
  return out.size() < limit;
}

// The text of a message's content: a string, or the "text" of each part of an array.
bool append_content(std::string& out, const boost::json::value& content, std::size_t limit) {
  if (const auto* s = content.if_string()) {
    return append_capped(out, *s, limit);
  }
  if (const auto* parts = content.if_array()) {
    for (const auto& part : *parts) {
      const auto* o = part.if_object();
      const auto* text = o != nullptr ? o->if_contains("text") : nullptr;
      if (text != nullptr && text->is_string() && !append_capped(out, text->get_string(), limit)) {
        return false;
      }
    }
  }
  return out.size() < limit;
}

}  // namespace

std::uint64_t stable_hash(std::string_view bytes) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return mix(h);
}

std::size_t least_outstanding(std::span<const std::size_t> loads, std::uint64_t random,
                              std::span<const bool> skip) {
  VA_CHECK(!loads.empty() && (skip.empty() || skip.size() == loads.size()));
  // Draw ranks among the pods not skipped, then find their indices.
  const auto n = skip.empty()
                     ? loads.size()
                     : static_cast<std::size_t>(std::count(skip.begin(), skip.end(), false));
  VA_CHECK(n > 0);
  const auto index = [&](std::size_t rank) {
    if (skip.empty()) {
      return rank;
    }
    std::size_t i = 0;
    for (;; ++i) {
      if (!skip[i] && rank-- == 0) {
        return i;
      }
    }
  };
  if (n == 1) {
    return index(0);
  }
  const std::size_t a = index(random % n);
  const std::size_t b = index((random % n + 1 + (random / n) % (n - 1)) % n);  // any other
  return loads[b] < loads[a] ? b : a;
}

Ring::Ring(std::vector<std::string> pods, int points) : pods_(std::move(pods)) {
  points_.reserve(pods_.size() * static_cast<std::size_t>(points));
  for (std::uint32_t i = 0; i < pods_.size(); ++i) {
    for (int p = 0; p < points; ++p) {
      std::string at = pods_[i];
      at.append("#").append(std::to_string(p));
      points_.push_back(Point{stable_hash(at), i});
    }
  }
  // Ties (two pods on one point) broken by the pod's id, the same in every replica.
  std::sort(points_.begin(), points_.end(), [this](const Point& x, const Point& y) {
    return x.at != y.at ? x.at < y.at : pods_[x.pod] < pods_[y.pod];
  });
}

std::size_t Ring::pick(std::uint64_t key, std::span<const std::size_t> loads, double c,
                       std::span<const bool> skip) const {
  VA_CHECK(!pods_.empty() && loads.size() == pods_.size());
  VA_CHECK(skip.empty() || skip.size() == pods_.size());
  const auto skipped = [&](std::size_t i) { return !skip.empty() && skip[i]; };
  std::size_t total = 0;
  std::size_t counted = 0;
  for (std::size_t i = 0; i < loads.size(); ++i) {
    if (!skipped(i)) {
      total += loads[i];
      ++counted;
    }
  }
  VA_CHECK(counted > 0);
  const auto bound = static_cast<std::size_t>(
      std::ceil(c * static_cast<double>(total + 1) / static_cast<double>(counted)));
  auto it = std::lower_bound(points_.begin(), points_.end(), key,
                             [](const Point& p, std::uint64_t k) { return p.at < k; });
  // Some pod is under the bound (their mean is under it): at most one turn of the ring.
  for (std::size_t step = 0; step < points_.size(); ++step, ++it) {
    if (it == points_.end()) {
      it = points_.begin();
    }
    if (!skipped(it->pod) && loads[it->pod] < bound) {
      return it->pod;
    }
  }
  return points_[0].pod;  // unreachable while c >= 1
}

std::string prompt_prefix(const boost::json::object& body, std::size_t limit) {
  std::string out;
  if (const auto* messages = body.if_contains("messages"); messages && messages->is_array()) {
    for (const auto& m : messages->get_array()) {
      const auto* o = m.if_object();
      if (o == nullptr) {
        continue;
      }
      const auto* role = o->if_contains("role");
      if (role != nullptr && role->is_string() && !append_capped(out, role->get_string(), limit)) {
        break;
      }
      if (!append_capped(out, "\n", limit)) {
        break;
      }
      const auto* content = o->if_contains("content");
      if (content != nullptr && !append_content(out, *content, limit)) {
        break;
      }
      if (!append_capped(out, "\n", limit)) {
        break;
      }
    }
    return out;
  }
  if (const auto* prompt = body.if_contains("prompt")) {
    const auto* first =
        prompt->is_array() && !prompt->get_array().empty() ? &prompt->get_array().front() : prompt;
    if (first->is_string()) {
      append_capped(out, first->get_string(), limit);
    }
  }
  return out;
}

std::optional<std::uint64_t> prefix_key(std::string_view body, std::size_t limit) {
  boost::system::error_code ec;
  const auto doc = boost::json::parse(body, ec);
  if (ec || !doc.is_object()) {
    return std::nullopt;
  }
  const auto prefix = prompt_prefix(doc.get_object(), limit);
  if (prefix.empty()) {
    return std::nullopt;
  }
  return stable_hash(prefix);
}

}  // namespace va::routing
