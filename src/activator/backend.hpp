#pragma once
// One backend as the request side sees it: hold a request until the backend is ready (waking it
// once), count it in flight, admin wake and sleep, /status. The state machine that starts and
// stops the backend is the Controller (controller.hpp); the two share `Shared`.
//
// Threading: any session on any I/O thread may call these; the shared state is under one mutex.
// Sessions are woken through a timer on their own executor.
#include <boost/json/object.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "activator/controller.hpp"
#include "activator/queue.hpp"
#include "activator/shared.hpp"
#include "core/errors.hpp"
#include "core/net.hpp"
#include "metrics/metrics.hpp"
#include "scaler/scaler.hpp"
#include "upstream/pool.hpp"

namespace va::k8s {
class EndpointSlices;
}

namespace va::activator {

class Backend;

// Counts one request as in flight until destroyed (the last response byte was written, or the
// client left). Move-only.
class Lease {
 public:
  Lease() = default;
  explicit Lease(Backend* b) : backend_(b) {}
  Lease(Lease&& o) noexcept : backend_(std::exchange(o.backend_, nullptr)) {}
  Lease& operator=(Lease&& o) noexcept;
  ~Lease();

 private:
  Backend* backend_ = nullptr;
};

struct Acquired {
  Lease lease;
  std::optional<double> waited_ms;  // set when the request was held for a wake
};

// What tests replace: the clock, and the health probe (by default GET health.path on the pool's
// target).
struct BackendSeams {
  TimeSource* time = nullptr;
  Controller::Probe probe;
};

class Backend {
 public:
  using Settings = activator::Settings;
  // Builds the backend's scaler on the controller's executor (see scaler.hpp's threading note).
  using ScalerFactory = std::function<std::unique_ptr<scaler::Scaler>(Executor)>;
  using Seams = BackendSeams;

  Backend(Settings settings, Executor ex, const ScalerFactory& make_scaler, upstream::Pool& pool,
          metrics::Metrics& metrics, PendingBudget& budget, Seams seams = {});
  ~Backend();

  const std::string& name() const { return shared_.settings.name; }
  // The upstream URL's pool: the Service, when no pod is known.
  upstream::Pool& pool() { return pool_; }

  // Where one request goes: a pod (counted on it until `pod` is destroyed), or, while no pod is
  // known, the upstream URL's pool.
  struct Route {
    upstream::Pool* pool = nullptr;
    std::optional<routing::Pods::Use> pod;
  };
  // The key of `routing: prefix` for a request whose body is `body` (routing::prefix_key); none
  // with another policy. Taken once per request, before its tries.
  std::optional<std::uint64_t> route_key(std::string_view body) const;
  // For a request with that key; with none (or a body not read yet), the least loaded pod.
  Route route(std::optional<std::uint64_t> key = std::nullopt);
  // The pods to send to from now on (ready, not terminating; k8s/endpoint_slices.hpp). Any
  // thread.
  void set_pods(const std::vector<routing::PodAddress>& usable) { pods_.update(usable); }

  // Starts the controller: it observes what is there and adopts a running backend.
  void start() { controller_->start(); }
  // Several proxy replicas (coord/): scale-downs need their agreement. Before start().
  void set_peers(Peers* peers) {
    peers_ = peers;
    controller_->set_peers(peers);
  }
  // The watch of the backend's Service's EndpointSlices, when there is one
  // (k8s/endpoint_slices.hpp; the App starts and stops it and feeds set_pods() from its
  // usable()): shown in status() as `endpoints`. Before start().
  void set_endpoints(std::shared_ptr<k8s::EndpointSlices> endpoints) {
    endpoints_ = std::move(endpoints);
  }
  const std::shared_ptr<k8s::EndpointSlices>& endpoints() const { return endpoints_; }
  // Proxy shutdown, phase 1: held and new requests get 503; in-flight ones go on.
  void begin_shutdown();
  // Phase 2, once in-flight requests are done: the controller ends, then the scaler's own
  // shutdown (the process scaler stops its child; kubernetes leaves the Deployment as it is).
  task<void> shutdown();

  // Returns at once when ready; otherwise holds the request (waking the backend once) until it
  // is ready, fails, `wake_timeout` passes, or the client disconnects (watched on `client`).
  task<outcome<Acquired>> acquire(std::size_t body_bytes, Socket& client);

  // A lease if the backend is ready right now; never holds or wakes.
  std::optional<Lease> try_acquire();

  // A connection to the upstream failed although the backend was ready: re-check it now.
  void suspect();

  // Admin calls. sleep() fails with 409 semantics (returns why) while requests are in flight or
  // held; otherwise the backend is scaled to 0 whatever its state. With peers, a ready backend
  // is stopped only by the leader and only if every replica agrees (nothing in flight or held
  // anywhere): the scale-down is proposed, as an idle one is, and refused on a follower.
  void wake(std::string_view cause);
  std::optional<std::string> sleep(std::string_view cause);

  std::size_t in_flight() const;
  std::size_t pending() const;
  State state() const;
  // The ids the backend's own /v1/models listed when it was last ready (none before).
  std::vector<std::string> reported_models() const;
  boost::json::object status() const;
  // What stops the scaler from working as configured (Scaler::setup_problems()). Any thread.
  std::vector<std::string> setup_problems() const { return controller_->scaler().setup_problems(); }
  // Adds the time spent awake up to now to backend_awake_seconds_total.
  void account_awake();

  // What this replica tells the others (coord/): any thread.
  struct Report {
    State state = State::asleep;
    std::size_t in_flight = 0;
    std::size_t held = 0;
    Clock::duration idle_for{};  // since the last activity; 0 while anything is in flight or held
    bool fenced = false;         // fence(true), not yet lifted nor ended by leaving ready
  };
  Report report() const;
  // While fenced a ready backend grants no lease (requests are held); lifting it releases them.
  void fence(bool on);

 private:
  friend class Lease;

  void end_request();
  // The lease of a backend that is ready (and not suspect), at once; what try_acquire() and
  // acquire() both begin with.
  std::optional<Lease> lease_if_ready_locked();
  // Waits for `w` to be released or refused, its deadline, or its client leaving.
  task<bool> wait_held(Waiter& w, Clock::time_point deadline, Socket& client);

  Shared shared_;
  upstream::Pool& pool_;
  routing::Pods pods_;
  std::uint64_t pods_metric_ = 0;  // the source of pod_in_flight_requests
  PendingBudget& budget_;
  std::unique_ptr<Controller> controller_;
  Peers* peers_ = nullptr;
  std::shared_ptr<k8s::EndpointSlices> endpoints_;
};

}  // namespace va::activator
