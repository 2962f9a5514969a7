#pragma once
// Keep-alive connections to one backend's upstream (docs/life-of-a-request.md). Idle connections
// are kept below vLLM's 5 s keep-alive so a pooled connection is rarely stale; one that is stale
// anyway is detected by the forwarder and the request retried on a fresh connection.
//
// Thread-safety: take_idle/release/clear may be called from any thread (mutex). A connection is
// used by one coroutine at a time, and only on the io_context it was opened on: take_idle() takes
// the newest idle connection of the caller's own io_context (core/net.hpp).
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/deadline.hpp"
#include "core/net.hpp"

namespace va::upstream {

struct Target {
  std::string host;  // name or address, without brackets
  std::string port;
  std::string host_header;  // "host:port" as sent in Host
  // backends[].upstream_headers: set on every forwarded request, replacing the client's field of
  // the same name (case-blind).
  std::vector<std::pair<std::string, std::string>> headers;
};

// One connection to the upstream, and the one deadline that bounds its operations: the connect
// (Pool::Settings::connect_timeout), the health probe's exchange, and the upstream's silence in
// a forwarded one (backends[].upstream_timeout). The deadline lives as long as the connection,
// so that an exchange needs no timer and no shared state of its own; it is paused while the
// connection idles in the pool. Held by pointer: the deadline's state points at its timer.
struct Link {
  explicit Link(const Executor& ex) : socket(ex), silence(ex) {}
  Socket socket;
  MovingDeadline silence;
};
using Stream = std::unique_ptr<Link>;

struct Connection {
  Stream stream;
  bool reused = false;
};

class Pool {
 public:
  struct Settings {
    Target target;
    std::chrono::milliseconds max_idle = std::chrono::milliseconds(4000);
    std::size_t max_idle_connections = 256;
    std::chrono::milliseconds connect_timeout = std::chrono::milliseconds(5000);
    // How long the upstream may send nothing: before the response head, and between two reads
    // of its body (backends[].upstream_timeout).
    std::chrono::milliseconds upstream_timeout = std::chrono::minutes(10);
  };

  explicit Pool(Settings settings);

  // A pooled idle connection (reused = true) opened on `here`'s io_context, if there is one; a
  // caller that gets none open()s one.
  std::optional<Connection> take_idle(const Executor& here);
  // Returns a connection whose last response was complete and keep-alive.
  void release(Connection c);
  // Drops every idle connection (the backend is stopping or died).
  void clear();
  const Target& target() const { return settings_.target; }
  const Settings& settings() const { return settings_; }
  std::chrono::milliseconds upstream_timeout() const { return settings_.upstream_timeout; }

  // A new connection on the calling coroutine's io_context, within Settings::connect_timeout.
  task<std::pair<error_code, Stream>> open();
  // Opens a new connection on `ex` (also used by the health probe), within `timeout`.
  static task<std::pair<error_code, Stream>> connect(Executor ex, const Target& t,
                                                     std::chrono::milliseconds timeout);

 private:
  struct Idle {
    Stream stream;
    Clock::time_point since;
  };
  Settings settings_;
  std::mutex mu_;
  std::deque<Idle> idle_;
};

}  // namespace va::upstream
