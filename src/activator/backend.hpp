#pragma once
// One backend's state machine (README.md, "Backend state machine"): hold, wake, release, shed, and
// the idle stop.
//
//   asleep ──wake──► waking ──ready──► ready ──idle──► stopping ──stopped──► asleep
//                      │ fatal / timeout                          (held requests wake it again)
//                      ▼
//                    failed ──next request──► waking
//
// Threading: the state below is guarded by `mu_` and may be read or changed from any session.
// The controller coroutine (the only one that talks to the Scaler) runs on `control_`, the first
// I/O thread's executor: one thread runs it, so the controller never runs in parallel with itself.
// Sessions are woken through a timer on their own executor.
#include <boost/json/object.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "core/errors.hpp"
#include "core/net.hpp"
#include "metrics/metrics.hpp"
#include "scaler/scaler.hpp"
#include "upstream/pool.hpp"

namespace va::activator {

enum class State { asleep, waking, ready, stopping, failed };
std::string_view name(State s);

// Bytes of held request bodies across all backends (limits.max_pending_bytes).
class PendingBudget {
 public:
  explicit PendingBudget(std::size_t limit) : limit_(limit) {}
  bool try_add(std::size_t n);
  void sub(std::size_t n) { used_.fetch_sub(n); }
  std::size_t used() const { return used_.load(); }

 private:
  std::size_t limit_;
  std::atomic<std::size_t> used_{0};
};

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

class Backend {
 public:
  struct Settings {
    std::string name;
    std::chrono::milliseconds idle_timeout;
    std::chrono::milliseconds wake_timeout;
    std::size_t max_pending;
    config::Health health;
    int replicas;
  };

  // Builds the backend's scaler on the controller's executor (see scaler.hpp's threading note).
  using ScalerFactory = std::function<std::unique_ptr<scaler::Scaler>(Executor)>;

  Backend(Settings settings, Executor ex, const ScalerFactory& make_scaler, upstream::Pool& pool,
          metrics::Metrics& metrics, PendingBudget& budget);
  ~Backend();

  const std::string& name() const { return settings_.name; }
  upstream::Pool& pool() { return pool_; }

  // Starts the controller: it observes what is there and adopts a running backend.
  void start();
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

  // Admin calls. sleep() fails with 409 semantics (returns false) while requests are in flight.
  void wake(std::string_view cause);
  bool sleep(std::string_view cause);

  std::size_t in_flight() const;
  boost::json::object status() const;
  // What stops the scaler from working as configured (Scaler::setup_problems()). Any thread.
  std::vector<std::string> setup_problems() const { return scaler_->setup_problems(); }
  // Adds the time spent awake up to now to backend_awake_seconds_total.
  void account_awake();

 private:
  friend class Lease;
  struct Waiter;

  void end_request();
  void poke();
  task<void> run();
  task<void> control();
  task<void> wait_poke(std::chrono::milliseconds d);
  task<void> run_asleep();
  task<void> run_waking();
  task<void> run_ready();
  task<void> run_stopping();
  task<bool> healthy();
  // scale_to(settings_.replicas), retried with backoff while the scaler is unavailable and the
  // wake goes on; false when the wake ended (failed, admin sleep, shutdown).
  task<bool> scale_up(Clock::time_point started);
  // Why the backend goes up or down right now, for the scaler's record ("3 requests held").
  std::string scale_cause_locked() const;
  void set_state_locked(State to, std::string_view cause);
  void fail_waiters_locked(errc code, const std::string& message);
  void release_waiters_locked();
  void finish_waiters_locked(const Failure* failure);  // nullptr: granted
  // Wakes the sessions of `woken` from `from` on, a batch at a time.
  static void wake_waiters(std::shared_ptr<std::vector<std::shared_ptr<Waiter>>> woken,
                           std::size_t from);
  // waking → failed, held requests get 503 with `reason`; false if no longer waking.
  bool fail_wake_locked(const std::string& reason);
  void update_gauges_locked();
  // The lease of a backend that is ready (and not suspect), at once; what try_acquire() and
  // acquire() both begin with.
  std::optional<Lease> lease_if_ready_locked();
  void account_awake_locked(Clock::time_point now);

  Settings settings_;
  Executor control_;  // one thread runs it: the controller never runs in parallel with itself
  std::unique_ptr<scaler::Scaler> scaler_;
  upstream::Pool& pool_;
  metrics::Metrics& metrics_;
  PendingBudget& budget_;
  Timer signal_;
  std::atomic<bool> poked_{false};

  mutable std::mutex mu_;
  State state_ = State::asleep;
  bool shutting_down_ = false;
  bool suspect_ = false;
  std::size_t in_flight_ = 0;
  std::deque<std::shared_ptr<Waiter>> pending_;
  Clock::time_point last_activity_ = Clock::now();
  // When run_ready() wakes next by itself: a request that ends pokes it only if the idle
  // deadline comes sooner (a poke per request would cost a trip to the controller each).
  Clock::time_point ready_wakes_at_ = Clock::time_point::min();
  Clock::time_point wake_started_{};
  Clock::time_point awake_accounted_{};
  std::optional<double> last_wake_seconds_;
  unsigned long wakes_ = 0;
  int failed_wakes_ = 0;   // consecutive; drives the backoff before the next wake
  int stop_attempts_ = 0;  // control_ only: failed scale-downs in a row
  std::string last_error_;
  std::string cause_;            // of the last state change
  bool stop_requested_ = false;  // control_ only
  bool stopped_ = false;         // control_ only
  Timer done_;                   // cancelled when the controller has ended
  metrics::Gauge* in_flight_gauge_;
  metrics::Gauge* pending_gauge_;
  std::optional<State> state_gauges_shown_;  // mu_: the state the state gauges show
};

}  // namespace va::activator
