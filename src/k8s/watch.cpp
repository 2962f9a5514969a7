#include "k8s/watch.hpp"

#include <boost/json.hpp>

namespace va::k8s {
namespace {

bool blank(std::string_view s) { return s.find_first_not_of(" \t\r\n") == std::string_view::npos; }

std::string shorten(std::string_view s) {
  constexpr std::size_t kMax = 120;
  return std::string(s.substr(0, kMax)) + (s.size() > kMax ? "..." : "");
}

Failure malformed(std::string what, std::string_view line) {
  return Failure{errc::bad_request,
                 "kubernetes watch: malformed event (" + what + "): " + shorten(line)};
}

const boost::json::string* string_at(const boost::json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v ? v->if_string() : nullptr;
}

}  // namespace

std::string_view to_string(WatchEvent::Type t) noexcept {
  switch (t) {
    case WatchEvent::Type::added:
      return "ADDED";
    case WatchEvent::Type::modified:
      return "MODIFIED";
    case WatchEvent::Type::deleted:
      return "DELETED";
    case WatchEvent::Type::bookmark:
      return "BOOKMARK";
    case WatchEvent::Type::error:
      return "ERROR";
  }
  return "?";
}

outcome<WatchEvent> parse_watch_event(std::string_view line) {
  boost::json::parse_options opts;
  opts.max_depth = 128;  // managedFields nest deeper than the default 32 allows for
  error_code ec;
  auto v = boost::json::parse(line, ec, {}, opts);
  if (ec) {
    return malformed("not JSON: " + ec.message(), line);
  }
  auto* root = v.if_object();
  if (root == nullptr) {
    return malformed("not a JSON object", line);
  }
  const auto* type = string_at(*root, "type");
  if (type == nullptr) {
    return malformed("no \"type\" string", line);
  }
  WatchEvent e;
  if (*type == "ADDED") {
    e.type = WatchEvent::Type::added;
  } else if (*type == "MODIFIED") {
    e.type = WatchEvent::Type::modified;
  } else if (*type == "DELETED") {
    e.type = WatchEvent::Type::deleted;
  } else if (*type == "BOOKMARK") {
    e.type = WatchEvent::Type::bookmark;
  } else if (*type == "ERROR") {
    e.type = WatchEvent::Type::error;
  } else {
    return malformed("unknown type \"" + std::string(*type) + "\"", line);
  }
  auto* object = root->if_contains("object");
  if (object == nullptr || !object->is_object()) {
    return malformed("no \"object\" object", line);
  }
  e.object = std::move(object->get_object());
  if (const auto* meta = e.object.if_contains("metadata"); meta && meta->is_object()) {
    if (const auto* rv = string_at(meta->get_object(), "resourceVersion")) {
      e.resource_version = std::string(*rv);
    }
  }
  if (e.type == WatchEvent::Type::error) {
    if (const auto* code = e.object.if_contains("code")) {
      if (code->is_int64()) {
        e.error_code = static_cast<int>(code->get_int64());
      } else if (code->is_uint64()) {
        e.error_code = static_cast<int>(code->get_uint64());
      }
    }
    if (const auto* reason = string_at(e.object, "reason")) {
      e.error_reason = std::string(*reason);
    }
    if (const auto* message = string_at(e.object, "message")) {
      e.error_message = std::string(*message);
    }
  }
  return e;
}

void WatchDecoder::feed(std::string_view bytes) {
  // Drop consumed lines before growing the buffer.
  if (pos_ > 0 && pos_ >= buf_.size() / 2) {
    buf_.erase(0, pos_);
    scan_ -= pos_;
    pos_ = 0;
  }
  buf_.append(bytes);
}

std::optional<outcome<WatchEvent>> WatchDecoder::next() {
  for (;;) {
    const auto nl = buf_.find('\n', scan_);
    if (nl == std::string::npos) {
      scan_ = buf_.size();
      if (skipping_) {
        pos_ = scan_;  // nothing of an over-long line is kept
        return std::nullopt;
      }
      if (buf_.size() - pos_ > max_line_) {
        const auto size = buf_.size() - pos_;
        pos_ = scan_;
        skipping_ = true;
        return Failure{errc::body_too_large, "kubernetes watch: an event line is longer than " +
                                                 std::to_string(max_line_) + " bytes (" +
                                                 std::to_string(size) + " so far)"};
      }
      return std::nullopt;
    }
    const std::string_view line(buf_.data() + pos_, nl - pos_);
    pos_ = scan_ = nl + 1;
    if (skipping_) {
      skipping_ = false;
      continue;
    }
    if (line.size() > max_line_) {
      return Failure{errc::body_too_large, "kubernetes watch: an event line is longer than " +
                                               std::to_string(max_line_) + " bytes (" +
                                               std::to_string(line.size()) + ")"};
    }
    if (blank(line)) {
      continue;
    }
    return parse_watch_event(line);
  }
}

bool WatchDecoder::has_partial_line() const {
  return !skipping_ && !blank(std::string_view(buf_).substr(pos_));
}

bool is_expired(const WatchEvent& e) {
  return e.type == WatchEvent::Type::error &&
         (e.error_code == 410 || e.error_reason == "Expired" || e.error_reason == "Gone");
}

bool is_expired_response(const Response& r) {
  if (r.status == 410) {
    return true;
  }
  if (r.status != 500) {
    return false;
  }
  error_code ec;
  const auto v = boost::json::parse(r.body, ec);
  const auto* obj = !ec ? v.if_object() : nullptr;
  const auto* message = obj ? string_at(*obj, "message") : nullptr;
  return message != nullptr &&
         std::string_view(*message).find("required revision has been compacted") !=
             std::string_view::npos;
}

}  // namespace va::k8s
