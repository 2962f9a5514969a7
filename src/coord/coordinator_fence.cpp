// The fence of a scale-down (coordinator.hpp): the leader proposes it, judges the members'
// answers and decides; a member follows the leader's fence and answers it.
#include "coord/coordinator.hpp"
#include "core/log.hpp"

namespace va::coord {

// --- a member: follow the leader's fence ---------------------------------------------------------

void Coordinator::follow() {
  std::optional<Fence> fence;
  if (const auto it = seen_.find(settings_.lease_name);
      !leading_ && it != seen_.end() && live(it->second)) {
    fence = decode_fence(it->second.record.data);
  }
  if (followed_ && fence && fence->id == followed_->fence.id) {
    std::lock_guard lock(mu_);
    followed_->fence.stopping = followed_->fence.stopping || fence->stopping;
  } else if (followed_ && !followed_->fence.stopping) {
    lift_followed();  // let go (or the leader is gone)
  }
  expire_followed();
  if (!fence || followed_ || fence->id == lifted_) {
    return;  // a new fence while a stopping one is kept is answered when that one ends; one let
             // go is not taken up again while the leader's Lease still shows it
  }
  {
    std::lock_guard lock(mu_);
    followed_ = Followed{*fence, time_.now()};
  }
  if (auto* b = backend(fence->backend)) {
    b->fence(true);  // before our activity is read for the answer
  }
}

void Coordinator::expire_followed() {
  // Unanswered for a lease_duration, a fence is let go; one that went on to a stop is kept until
  // the backend leaves ready here, or twice as long if it never does.
  if (!followed_) {
    return;
  }
  // Once the backend has left ready here (which ends its fence), a stopping fence has done its
  // work: let it go, so that the leader's next fence is answered at once rather than after this
  // one's bound.
  auto* b = backend(followed_->fence.backend);
  if (followed_->fence.stopping && b != nullptr && !b->report().fenced) {
    lift_followed();
    return;
  }
  const auto bound = followed_->fence.stopping ? 2 * settings_.lease_duration
                                               : Clock::duration(settings_.lease_duration);
  if (time_.now() - followed_->seen >= bound) {
    lift_followed();
  }
}

void Coordinator::lift_followed() {
  if (auto* b = backend(followed_->fence.backend)) {
    b->fence(false);
  }
  std::lock_guard lock(mu_);
  lifted_ = followed_->fence.id;
  followed_.reset();
}

// --- the leader: agree on a scale-down -----------------------------------------------------------

std::string Coordinator::objection(const std::string& backend, Clock::duration idle_timeout,
                                   const std::string& fence_id,
                                   Clock::time_point& ask_again) const {
  const auto now = time_.now();
  // Not within idle_timeout of anyone's last activity, a dead replica's included when it last
  // told it (one that died busy is ignored: what it served is gone with it).
  const auto quiet_since = [](const Seen& m, const BackendActivity& a) {
    return m.changed - std::chrono::milliseconds(a.idle_ms);
  };
  const auto prefix = settings_.lease_name + "-";
  for (const auto& [name, m] : seen_) {
    if (!name.starts_with(prefix) || name == member_name() || live(m)) {
      continue;
    }
    const auto report = decode_report(m.record.data);
    const auto it = report.backends.find(backend);
    if (it != report.backends.end() && !it->second.busy() &&
        quiet_since(m, it->second) + idle_timeout > now) {
      ask_again = std::min(ask_again, quiet_since(m, it->second) + idle_timeout);
      return "busy";
    }
  }
  std::string why;
  for (const Seen* m : live_members()) {
    const auto report = decode_report(m->record.data);
    const auto it = report.backends.find(backend);
    if (!fence_id.empty() && report.acked != fence_id) {
      why = "unanswered";
      continue;
    }
    if (it == report.backends.end()) {
      continue;  // a replica without this backend cannot be serving it
    }
    if (it->second.busy()) {
      ask_again = std::min(ask_again, now + settings_.heartbeat_interval);
      return "busy";
    }
    if (quiet_since(*m, it->second) + idle_timeout > now) {
      ask_again = std::min(ask_again, quiet_since(*m, it->second) + idle_timeout);
      return "busy";
    }
  }
  return why;
}

task<activator::StopVerdict> Coordinator::agree_to_stop(const std::string& backend_name,
                                                        Clock::duration idle_timeout) {
  const auto now = time_.now();
  activator::StopVerdict no{.agreed = false, .ask_again = now + settings_.heartbeat_interval};
  if (!leading_ || stopping_) {
    co_return no;
  }
  if (now < leader_since_ + settings_.lease_duration) {
    no.ask_again = leader_since_ + settings_.lease_duration;  // what it missed as a follower
    co_return no;
  }
  if (proposal_) {
    co_return no;  // one at a time
  }
  auto ask_again = Clock::time_point::max();
  if (!objection(backend_name, idle_timeout, "", ask_again).empty()) {
    no.ask_again = ask_again;
    co_return no;
  }
  {
    std::lock_guard lock(mu_);
    proposal_ = Proposal{.fence = Fence{.backend = backend_name,
                                        .id = settings_.identity + "-" + std::to_string(++fences_),
                                        .stopping = false},
                         .idle_timeout = idle_timeout,
                         .started = now,
                         .verdict = std::nullopt};
  }
  if (auto* b = backend(backend_name)) {
    b->fence(true);
  }
  log::info("coordination: scale-down proposed",
            {{"backend", backend_name}, {"fence", proposal_->fence.id}});
  const auto id = proposal_->fence.id;
  poke_.cancel();  // announced at once
  Timer decided(ex_);
  decided_ = &decided;
  while (proposal_ && proposal_->fence.id == id && !proposal_->verdict) {
    time_.arm(decided, Clock::time_point::max());
    co_await decided.async_wait(use_nothrow);
  }
  time_.disarm(decided);
  decided_ = nullptr;
  const bool agreed = proposal_ && proposal_->fence.id == id && proposal_->verdict == "agreed";
  if (agreed) {
    co_return activator::StopVerdict{.agreed = true, .ask_again = now};
  }
  no.ask_again = time_.now() + settings_.heartbeat_interval;
  co_return no;
}

void Coordinator::judge() {
  if (!proposal_ || proposal_->verdict) {
    return;
  }
  auto ask_again = Clock::time_point::max();
  const auto why =
      objection(proposal_->fence.backend, proposal_->idle_timeout, proposal_->fence.id, ask_again);
  if (why.empty()) {
    decide("agreed");
  } else if (why == "busy") {
    decide("busy");
  } else if (time_.now() - proposal_->started >= settings_.lease_duration) {
    decide("unanswered");
  }
}

void Coordinator::decide(const std::string& verdict) {
  const auto backend_name = proposal_->fence.backend;
  metrics_.coordination_fences_total.with({backend_name, verdict}).inc();
  log::info("coordination: scale-down decided",
            {{"backend", backend_name}, {"fence", proposal_->fence.id}, {"verdict", verdict}});
  {
    std::lock_guard lock(mu_);
    proposal_->verdict = verdict;
  }
  if (verdict != "agreed") {
    if (auto* b = backend(backend_name)) {
      b->fence(false);
    }
    std::lock_guard lock(mu_);
    proposal_.reset();
  }
  if (decided_) {
    decided_->cancel();
  }
}

void Coordinator::stop_decided(const std::string& backend_name, bool stopping) {
  if (!proposal_ || proposal_->fence.backend != backend_name) {
    return;
  }
  if (!stopping) {
    if (auto* b = backend(backend_name)) {
      b->fence(false);
    }
  }
  std::lock_guard lock(mu_);
  if (stopping) {
    // Announced as stopping for a few heartbeats (until stopping_writes_ runs out), then gone:
    // the members keep their fence until the backend leaves ready for them.
    proposal_->fence.stopping = true;
    stopping_writes_ = 3;
  } else {
    proposal_.reset();
  }
  poke_.cancel();
}

}  // namespace va::coord
