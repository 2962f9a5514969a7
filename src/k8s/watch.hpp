#pragma once
// The body of a Kubernetes watch response: one metav1.WatchEvent JSON object per line
// ({"type":"ADDED","object":{...}}\n), with chunk boundaries anywhere. WatchDecoder is pure (no
// I/O): feed() bytes as they arrive, then take events with next() until it answers nullopt.
#include <boost/json/object.hpp>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "core/errors.hpp"
#include "k8s/client.hpp"

namespace va::k8s {

struct WatchEvent {
  enum class Type { added, modified, deleted, bookmark, error };
  Type type = Type::added;
  boost::json::object object;
  std::string resource_version;  // object.metadata.resourceVersion ("" when absent); opaque
  int error_code = 0;            // ERROR only: Status.code (410 when the RV is too old)
  std::string error_reason;      // ERROR only: Status.reason ("Expired", "Gone", ...)
  std::string error_message;     // ERROR only: Status.message
};

// "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR".
std::string_view to_string(WatchEvent::Type t) noexcept;

// One line (without its newline) as an event. errc::bad_request naming what is wrong.
outcome<WatchEvent> parse_watch_event(std::string_view line);

class WatchDecoder {
 public:
  static constexpr std::size_t kDefaultMaxLine = 16 * 1024 * 1024;
  explicit WatchDecoder(std::size_t max_line = kDefaultMaxLine) : max_line_(max_line) {}

  void feed(std::string_view bytes);
  // The next complete event; a Failure for a malformed line (errc::bad_request; the line is
  // skipped) or a line longer than max_line (errc::body_too_large; the bytes up to its newline are
  // dropped); nullopt when more bytes are needed. Blank lines are skipped.
  std::optional<outcome<WatchEvent>> next();
  // Bytes of an unfinished line are buffered (other than blanks): at EOF the last event was cut.
  bool has_partial_line() const;

 private:
  std::string buf_;
  std::size_t pos_ = 0;   // start of the current line in buf_
  std::size_t scan_ = 0;  // buf_ before this holds no newline after pos_
  std::size_t max_line_;
  bool skipping_ = false;  // dropping the rest of an over-long line
};

// An ERROR event saying the watch's resourceVersion is too old: code 410 or reason Expired/Gone.
// The caller must re-LIST and watch from the list's resourceVersion.
bool is_expired(const WatchEvent& e);
// An HTTP answer saying the same: 410, or (Kubernetes 1.20, for a list at a compacted RV) a 500
// whose Status message contains "required revision has been compacted".
bool is_expired_response(const Response& r);

}  // namespace va::k8s
