#pragma once
// One list-then-watch loop over a collection of API objects, as client-go's reflector: the
// kubernetes scaler's Deployment and pods, the EndpointSlices of a Service.
//
// run() lists the collection (path?query), keeps its items by name, then watches from the list's
// resourceVersion with bookmarks. Each watch asks for a timeoutSeconds drawn in
// [watch_timeout_min, watch_timeout_max] (so that many proxies' watches spread out) and is taken
// as dead when it has not ended watch_grace after that: a watch cut without a reset (a dead
// apiserver, a partition, a proxy that dropped the connection) is found within max + grace of its
// start. A watch that ends is resumed from the last resourceVersion (the bookmark the server
// sends just before it ends the watch), without a LIST; an expired one (HTTP 410, an ERROR event
// 410/Expired/Gone, 1.20's 500 "compacted") lists again. A failed list or watch is retried after
// 500 ms doubling to backoff_max, each with ±50% jitter, never in a tight loop; a watch that ends
// at once without an event counts as failed.
//
// Threading: every member, and every callback, runs on the executor given to the constructor.
// The owner keeps the Client and outlives run().
#include <boost/json/object.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <string_view>

#include "core/errors.hpp"
#include "core/net.hpp"
#include "k8s/client.hpp"

namespace va::k8s {

struct WatchEvent;

// How a list-then-watch loop is timed: each watch asks the API server to end it after a
// timeoutSeconds drawn in [timeout_min, timeout_max] and is taken as dead `grace` after that;
// failed attempts wait 500 ms doubling to `backoff_max`, each with ±50% jitter.
struct WatchTiming {
  std::chrono::seconds timeout_min = std::chrono::seconds(15);
  std::chrono::seconds timeout_max = std::chrono::seconds(25);
  std::chrono::milliseconds grace = std::chrono::seconds(5);
  std::chrono::milliseconds backoff_max = std::chrono::seconds(10);
};

class Reflector {
 public:
  struct Settings {
    std::string what;   // "deployment llm/vllm", in messages and log lines
    std::string path;   // the collection: /apis/apps/v1/namespaces/llm/deployments
    std::string query;  // fieldSelector=... or labelSelector=..., URL-encoded (set_query())
    // The log field that says whose loop it is: {"backend": "vllm"}.
    std::string log_key = "backend";
    std::string log_value;
    WatchTiming timing = {};
  };
  // What the owner hears, from run()'s coroutine. Any may be empty.
  struct Callbacks {
    std::function<void()> listing = {};  // a LIST is about to be sent
    std::function<void()> listed = {};   // a LIST has replaced items(); `changed` follows
    // An event changed items() (its object has moved there); `changed` follows.
    std::function<void(const WatchEvent&)> applied = {};
    // items(), synced() or error() changed: after a list, an event (not a bookmark), a failure.
    std::function<void()> changed = {};
  };

  Reflector(Settings settings, Client& client, Executor ex, Callbacks callbacks);
  Reflector(const Reflector&) = delete;
  Reflector& operator=(const Reflector&) = delete;

  // Before run(): the selector, when it is learnt later (the pods of a Scale's selector).
  void set_query(std::string query) { settings_.query = std::move(query); }

  // Lists and watches until stop(); once.
  task<void> run();
  // Ends run() at once: its request or backoff is abandoned. Also before run() (which then
  // returns at once) and from a callback.
  void stop();

  const Settings& settings() const { return settings_; }
  // The objects by metadata.name, as last listed and watched.
  const std::map<std::string, boost::json::object>& items() const { return items_; }
  bool synced() const { return synced_; }  // listed at least once
  // The last failure ("" again after a list, a watch event or a watch that ended normally), its
  // HTTP status (0: no answer, e.g. the API is down) and the verb of the request that failed
  // ("list" or "watch").
  const std::string& error() const { return error_; }
  unsigned error_status() const { return error_status_; }
  std::string_view error_verb() const { return error_verb_; }
  unsigned long lists() const { return lists_; }

 private:
  task<outcome<void>> list();
  task<outcome<void>> watch();
  void apply(WatchEvent& e);
  void clear_error();
  task<void> pause(std::chrono::milliseconds d);
  void notify() const;

  Settings settings_;
  Client& client_;
  Executor ex_;
  Callbacks callbacks_;
  Timer stop_;  // expires at min() on stop(): every wait ends at once
  bool stopping_ = false;
  std::mt19937 rng_;

  std::map<std::string, boost::json::object> items_;
  std::string rv_;  // empty: list first
  bool synced_ = false;
  std::string error_;
  unsigned error_status_ = 0;
  std::string_view error_verb_;
  unsigned long lists_ = 0;
};

}  // namespace va::k8s
