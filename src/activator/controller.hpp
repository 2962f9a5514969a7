#pragma once
// One backend's state machine (docs/state-machine.md), the only caller of its scaler:
//
//   asleep ──wake──► waking ──ready──► ready ──idle──► stopping ──stopped──► asleep
//     ▲  │             │ fatal / timeout   │ gone                  (held requests wake it again)
//     │  └──adopt──────┼──────────────────►│
//     │                ▼                   ▼
//     │              failed            asleep, still up: stopped idle_timeout after the last
//     │                                activity unless it comes back
//     └── a failed stop stays in stopping and is retried with backoff; a request held meanwhile
//         turns it into a wake, which probes before it scales: a pod still serving is kept.
//
// The invariants it keeps (README.md, "Invariants"): (a) a backend nobody uses is at 0 within
// idle_timeout of the last activity, whatever failed; (b) no request goes to a backend being
// stopped, and each held request is answered; (c) nothing in flight or held is ever stopped;
// (d) one scale call per wake or stop, retried only by the backoff below.
//
// Threading: the controller coroutine runs on one executor (one thread), never in parallel with
// itself; it reads and changes Shared under its lock and never holds the lock across a co_await.
// poke() may be called from any thread.
#include <atomic>
#include <functional>
#include <memory>
#include <optional>

#include "activator/peers.hpp"
#include "activator/shared.hpp"
#include "upstream/pool.hpp"
#include "upstream/probe.hpp"

namespace va::activator {

class Controller {
 public:
  // GET `path` on the backend (the health probe, its model list): status 0 for no answer.
  using Probe = std::function<task<upstream::ProbeResult>(const std::string& path)>;

  Controller(Shared& shared, Executor ex, std::unique_ptr<scaler::Scaler> scaler, Probe probe,
             upstream::Pool& pool);

  // Several proxy replicas: scale-downs need their agreement (before start()).
  void set_peers(Peers* peers) { peers_ = peers; }
  void start();
  // Something changed (a request is held, one ended, an admin call): look now.
  void poke();
  // Ends the controller, then the scaler's own shutdown.
  task<void> shutdown();
  const scaler::Scaler& scaler() const { return *scaler_; }

 private:
  task<void> run();
  task<void> control();
  task<void> wait_poke(Clock::duration d);
  // Waits until `until` whatever pokes come meanwhile; false when the controller is stopping.
  task<bool> wait_until(Clock::time_point until);

  task<void> run_idle();  // asleep or failed
  task<void> run_waking();
  task<void> run_ready();
  task<void> run_stopping();

  task<outcome<scaler::Observed>> observe();
  task<bool> healthy();
  // What the backend serves (GET /v1/models), kept for the proxy's own /v1/models.
  task<void> learn_models();
  // Asks the scaler for `replicas`, keeping up_ (what we believe the scaler was asked for).
  task<outcome<void>> scale(int replicas, std::string cause);
  // scale(settings.replicas), retried with backoff while the scaler is unavailable and someone
  // waits; false when the wake ended (failed, admin sleep, shutdown).
  task<bool> scale_up(Clock::time_point started);
  // Ready, held requests granted; false if an admin sleep took over. `started`: when the wake
  // that got here began (recorded as its duration); none when a running backend is adopted.
  bool become_ready(std::string_view why, std::optional<Clock::time_point> started);
  task<bool> pause_after_failed_wakes();  // false when the wake ended meanwhile
  task<void> await_ready(Clock::time_point started, bool replica_was_up);
  // wake_timeout passed and nobody waits: failed. False while anyone waits.
  bool gave_up(Clock::time_point started);
  // A backend left up (it went away while idle, a wake failed, someone started it) is due to
  // stop: stopping. Only when nobody uses it.
  task<void> stop_if_owed();
  // With peers: whether they agree to a scale-down now (else ask_peers_at_ says when to ask
  // again; `asked`, for an admin sleep, asks at once). Without: true.
  task<bool> peers_agree(Clock::duration idle_timeout, bool asked = false);
  // How many pods a wake asks for: `replicas`, or autoscaled, enough for the held requests.
  int wake_replicas() const;
  // Autoscaled and ready: the pods for the load now (summed over the replicas, on the leader).
  task<void> autoscale(const scaler::Observed& observed);
  // ready, idle for idle_timeout: stopping, if the peers agree. False while it stays ready.
  task<bool> stop_when_idle();
  // The wake ended without a ready backend: held requests were answered; stop what was started.
  void wake_failed();
  Clock::duration idle_wait() const;

  Shared& s_;
  Executor ex_;
  std::unique_ptr<scaler::Scaler> scaler_;
  Probe probe_;
  Peers* peers_ = nullptr;
  upstream::Pool& pool_;
  Timer signal_;
  std::atomic<bool> poked_{false};
  Timer done_;  // cancelled when the controller has ended

  // The controller's own (its executor only).
  bool up_ = false;  // the scaler was asked for replicas above 0, as far as we know
  int want_ = 1;     // the replicas last asked for above 0
  // Autoscaled: a change of the pods count (more for requests held during a wake, or the load's
  // when ready) is asked for not before this; after a failed call, with backoff.
  Clock::time_point resize_at_ = Clock::time_point::min();
  int resize_failures_ = 0;
  // Asks the scaler for `replicas` (autoscaled: a resize) unless a failed one backs off; false
  // when it was not asked or refused.
  task<bool> resize(int replicas, std::string cause, std::chrono::milliseconds first,
                    std::chrono::milliseconds most);
  // Autoscaled: the load since the backend last became ready.
  std::optional<activity::DesiredReplicas> desired_;
  Clock::duration grace_{};           // an owed stop is due this long after the last activity
  State after_stop_ = State::asleep;  // where a stop leads: asleep, or failed after a failed wake
  int stop_failures_ = 0;             // failed scale-downs in a row
  Clock::time_point stop_retry_at_ = Clock::time_point::min();
  bool look_now_ = true;     // the idle loop observes without waiting first
  bool models_due_ = false;  // ready since the model list was last asked for
  // A scale to 0 failed as unavailable (it may have timed out on its way): the API may still
  // apply it. A backend kept up asks for its replicas again once the API answers.
  bool stop_unsure_ = false;
  bool stop_requested_ = false;
  Clock::time_point ask_peers_at_ = Clock::time_point::min();  // not before, when they refused
  bool stopped_ = false;
};

}  // namespace va::activator
