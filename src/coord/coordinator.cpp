#include "coord/coordinator.hpp"

#include "core/duration.hpp"
#include "core/log.hpp"
#include "core/spawn.hpp"
#include "k8s/objects.hpp"

namespace va::coord {
namespace {

using namespace net::experimental::awaitable_operators;

LeaseRecord named(const std::string& name) {
  LeaseRecord r;
  r.name = name;
  return r;
}

int whole_seconds(std::chrono::milliseconds d) {
  return static_cast<int>(
      std::max<long long>(1, std::chrono::ceil<std::chrono::seconds>(d).count()));
}

}  // namespace

Coordinator::Coordinator(Settings settings, Executor ex, std::unique_ptr<LeaseStore> store,
                         std::vector<activator::Backend*> backends, metrics::Metrics& metrics,
                         TimeSource& time)
    : settings_(std::move(settings)),
      ex_(ex),
      store_(std::move(store)),
      backends_(std::move(backends)),
      metrics_(metrics),
      time_(time),
      poke_(ex),
      stop_(ex, Clock::time_point::max()),
      done_(ex, Clock::time_point::max()),
      check_pause_(ex),
      checks_({.key = "coordination",
               .who = settings_.identity,
               .unchecked = "this replica's permissions on coordination.k8s.io/leases are not "
                            "checked yet",
               .all_well = "setup checked: coordination may do all it needs",
               .interval = settings_.check_interval}) {
  metrics_.coordination_leader.with({}).set(0);
  metrics_.coordination_members.with({}).set(0);
}

Coordinator::~Coordinator() {
  time_.disarm(poke_);
  time_.disarm(check_pause_);
}

void Coordinator::start() {
  spawn(ex_, run(), "coordination");
  spawn(ex_, run_checks(), "coordination setup checks");
}

task<void> Coordinator::shutdown() {
  co_await net::co_spawn(
      ex_,
      [this]() -> task<void> {
        stopping_ = true;
        give_up_at_ = time_.now() + shutdown_bound();
        stop_.cancel();  // given_up() counts from now
        poke_.cancel();
        check_pause_.cancel();
        while (!ended_ || !checks_ended_) {
          co_await done_.async_wait(use_nothrow);
        }
      },
      use_task);
}

Clock::duration Coordinator::shutdown_bound() const {
  // A healthy API answers a write in milliseconds. Holding the proxy's exit longer than this for
  // one that does not answer buys nothing: the Leases expire by themselves after lease_duration,
  // as a killed replica's do, and the other replicas take over then.
  return std::min<Clock::duration>(
      {2 * settings_.heartbeat_interval, settings_.lease_duration, std::chrono::seconds(5)});
}

task<void> Coordinator::given_up() {
  if (!stopping_) {
    co_await stop_.async_wait(use_nothrow);  // until shutdown() cancels it
  }
  const auto cancelled = (co_await net::this_coro::cancellation_state).cancelled();
  if (!stopping_ || cancelled != net::cancellation_type::none) {
    co_return;  // what it raced against ended first
  }
  Timer t(ex_);
  time_.arm(t, give_up_at_);
  co_await t.async_wait(use_nothrow);
  time_.disarm(t);
}

Clock::duration Coordinator::tick_interval() const {
  // A proposal waits for the members' answers: look more often meanwhile.
  if (proposal_ && !proposal_->verdict) {
    return std::max<Clock::duration>(settings_.heartbeat_interval / 4, 100ms);
  }
  return settings_.heartbeat_interval;
}

task<void> Coordinator::run() {
  while (!stopping_) {
    try {
      // A heartbeat under way when the shutdown begins is waited for within shutdown_bound().
      const auto ended = co_await (tick() || given_up());
      if (ended.index() == 1) {
        log::warn("coordination: heartbeat given up: the API did not answer in time",
                  {{"after_seconds", to_seconds(shutdown_bound())}});
      }
    } catch (const std::exception& e) {
      log::error("coordination tick failed", {{"error", e.what()}});
    }
    if (stopping_) {
      break;
    }
    time_.arm_after(poke_, tick_interval());
    co_await poke_.async_wait(use_nothrow);
    time_.disarm(poke_);
  }
  if (proposal_ && !proposal_->verdict) {
    decide("lost");
  }
  const bool was_leading = leading_;
  if (leading_) {
    step_down("shutting down");
  }
  const auto released = co_await (release(was_leading) || given_up());
  if (released.index() == 1) {
    log::warn(
        "coordination: Lease release given up: the API did not answer in time; the Leases "
        "expire by themselves",
        {{"after_seconds", to_seconds(shutdown_bound())},
         {"lease_duration_seconds", to_seconds(settings_.lease_duration)}});
  }
  ended_ = true;
  done_.cancel();
}

task<void> Coordinator::release(bool leader) {
  // The leader Lease for another replica to take now, ours so that it no longer counts.
  if (auto it = seen_.find(settings_.lease_name); leader && it != seen_.end()) {
    auto r = stamped(it->second.record);
    r.holder.clear();
    r.duration_seconds = 1;
    r.data = encode(std::optional<Fence>{});
    written(co_await store_->update(r), "leader Lease release");
  }
  if (auto it = seen_.find(member_name()); it != seen_.end()) {
    auto r = stamped(it->second.record);
    r.duration_seconds = 1;
    // Dead from now on, but with its activity as it ends: the leader still holds the scale-down
    // to idle_timeout after this replica's last request (a rolling update).
    auto report = own_report();
    report.acked.clear();
    r.data = encode(report);
    written(co_await store_->update(r), "member Lease release");
  }
}

task<void> Coordinator::run_checks() {
  while (!stopping_) {
    // A check under way when the shutdown begins is waited for within shutdown_bound().
    auto found = co_await (store_->denied() || given_up());
    if (stopping_) {
      break;
    }
    time_.arm_after(check_pause_, checks_.answered(std::move(std::get<0>(found))));
    co_await check_pause_.async_wait(use_nothrow);
    time_.disarm(check_pause_);
  }
  checks_ended_ = true;
  done_.cancel();
}

task<void> Coordinator::tick() {
  auto listed = co_await store_->list();
  if (!listed) {
    log::warn("coordination: cannot list the Leases", {{"error", listed.error().message}});
    if (leading_ && time_.now() - renewed_ >= settings_.lease_duration * 2 / 3) {
      step_down("the leader Lease could not be renewed in time");
    }
    expire_followed();
    co_return;
  }
  observe(std::move(*listed));
  co_await elect();
  follow();
  co_await publish();
  judge();
}

void Coordinator::observe(std::vector<LeaseRecord> records) {
  const auto now = time_.now();
  std::lock_guard lock(mu_);
  std::map<std::string, Seen> next;
  for (auto& r : records) {
    auto it = seen_.find(r.name);
    const bool same = it != seen_.end() && it->second.record.resource_version == r.resource_version;
    const auto changed = same ? it->second.changed : now;
    auto name = r.name;  // before r is moved from
    next.emplace(std::move(name), Seen{std::move(r), changed});
  }
  seen_ = std::move(next);
  int members = 0;
  for (const auto& [name, s] : seen_) {
    members += name != settings_.lease_name && live(s) ? 1 : 0;
  }
  metrics_.coordination_members.with({}).set(members);
}

bool Coordinator::live(const Seen& s) const {
  return !s.record.holder.empty() &&
         time_.now() < s.changed + std::chrono::seconds(s.record.duration_seconds);
}

std::size_t Coordinator::load_elsewhere(const std::string& backend) const {
  std::lock_guard lock(mu_);  // the controller's executor is ours, but not necessarily its thread
  std::size_t load = 0;
  for (const Seen* m : live_members()) {
    const auto report = decode_report(m->record.data);
    if (const auto it = report.backends.find(backend); it != report.backends.end()) {
      load += it->second.in_flight + it->second.held;
    }
  }
  return load;
}

std::vector<const Coordinator::Seen*> Coordinator::live_members() const {
  std::vector<const Seen*> out;
  const auto prefix = settings_.lease_name + "-";
  for (const auto& [name, s] : seen_) {
    if (name.starts_with(prefix) && name != member_name() && live(s)) {
      out.push_back(&s);
    }
  }
  return out;
}

LeaseRecord Coordinator::stamped(LeaseRecord r) const {
  r.holder = settings_.identity;
  r.duration_seconds = whole_seconds(settings_.lease_duration);
  r.renew_time = k8s::format_micro_time(std::chrono::system_clock::now());
  return r;
}

bool Coordinator::written(const outcome<std::optional<LeaseRecord>>& r, const char* what) {
  const char* result = !r ? "failed" : *r ? "ok" : "conflict";
  metrics_.coordination_lease_writes_total.with({result}).inc();
  if (!r) {
    log::warn("coordination: write failed", {{"lease", what}, {"error", r.error().message}});
  }
  if (r && *r) {
    // What we wrote is what we know of it now (its new resourceVersion for the next write).
    std::lock_guard lock(mu_);
    const auto& record = **r;
    seen_[record.name] = Seen{record, time_.now()};
  }
  return r && *r;
}

// --- the leader Lease, as client-go's leaderelection ---------------------------------------------

task<void> Coordinator::elect() {
  const auto now = time_.now();
  const auto it = seen_.find(settings_.lease_name);
  const std::string data = encode(proposal_ ? std::optional(proposal_->fence) : std::nullopt);
  if (it == seen_.end()) {
    auto r = stamped(named(settings_.lease_name));
    r.acquire_time = r.renew_time;
    r.data = data;
    if (written(co_await store_->create(r), "leader Lease create")) {
      become_leader("created the leader Lease");
      renewed_ = now;
    }
    co_return;
  }
  const Seen& seen = it->second;
  const bool mine = seen.record.holder == settings_.identity;
  if (!mine && live(seen)) {
    {
      std::lock_guard lock(mu_);  // status() reads it from other threads
      leader_ = seen.record.holder;
    }
    if (leading_) {
      step_down("another replica holds the leader Lease");
    }
    co_return;
  }
  auto r = stamped(seen.record);
  r.data = data;
  if (!mine) {
    r.acquire_time = r.renew_time;
    ++r.transitions;
  }
  if (written(co_await store_->update(r), "leader Lease")) {
    if (!leading_) {
      become_leader(mine ? "holds the leader Lease" : "took over an expired leader Lease");
    }
    renewed_ = now;
    if (proposal_ && proposal_->fence.stopping && --stopping_writes_ <= 0) {
      std::lock_guard lock(mu_);
      proposal_.reset();
    }
  } else if (leading_ && now - renewed_ >= settings_.lease_duration * 2 / 3) {
    step_down("the leader Lease could not be renewed in time");
  }
}

void Coordinator::become_leader(const char* how) {
  std::lock_guard lock(mu_);
  leading_ = true;
  leader_ = settings_.identity;
  leader_since_ = time_.now();
  metrics_.coordination_leader.with({}).set(1);
  log::info("coordination: leading",
            {{"identity", settings_.identity},
             {"how", how},
             {"first_scale_down_after_seconds", to_seconds(settings_.lease_duration)}});
}

void Coordinator::step_down(const char* why) {
  {
    std::lock_guard lock(mu_);
    leading_ = false;
    metrics_.coordination_leader.with({}).set(0);
  }
  log::warn("coordination: no longer leading", {{"identity", settings_.identity}, {"why", why}});
  if (proposal_ && !proposal_->verdict) {
    decide("lost");
  }
}

bool Coordinator::leading() const {
  std::lock_guard lock(mu_);
  return leading_;
}

std::string Coordinator::leader() const {
  std::lock_guard lock(mu_);
  return leader_;
}

// --- a member: publish our activity --------------------------------------------------------------

MemberReport Coordinator::own_report() const {
  MemberReport report;
  for (auto* b : backends_) {
    const auto r = b->report();
    report.backends[b->name()] = BackendActivity{
        .in_flight = r.in_flight,
        .held = r.held,
        .idle_ms = std::chrono::duration_cast<std::chrono::milliseconds>(r.idle_for).count()};
  }
  if (followed_) {
    report.acked = followed_->fence.id;
  }
  return report;
}

task<void> Coordinator::publish() {
  const auto it = seen_.find(member_name());
  auto r = stamped(it != seen_.end() ? it->second.record : named(member_name()));
  r.data = encode(own_report());
  if (it == seen_.end()) {
    r.acquire_time = r.renew_time;
    written(co_await store_->create(r), "member Lease create");
  } else {
    written(co_await store_->update(r), "member Lease");
  }
}

activator::Backend* Coordinator::backend(const std::string& name) const {
  for (auto* b : backends_) {
    if (b->name() == name) {
      return b;
    }
  }
  return nullptr;
}

// --- /status -------------------------------------------------------------------------------------

boost::json::object Coordinator::status() const {
  std::lock_guard lock(mu_);
  const auto now = time_.now();
  boost::json::object o;
  o["identity"] = settings_.identity;
  o["leader"] = leader_;
  o["leading"] = leading_;
  boost::json::array problems;
  for (auto& p : checks_.problems()) {
    problems.emplace_back(std::move(p));
  }
  o["problems"] = std::move(problems);
  boost::json::array members;
  const auto prefix = settings_.lease_name + "-";
  for (const auto& [name, s] : seen_) {
    if (!name.starts_with(prefix)) {
      continue;
    }
    const auto report = decode_report(s.record.data);
    boost::json::object backends;
    for (const auto& [b, a] : report.backends) {
      backends[b] = {{"in_flight", a.in_flight}, {"held", a.held}, {"idle_ms", a.idle_ms}};
    }
    members.push_back(boost::json::object{{"identity", s.record.holder},
                                          {"live", live(s)},
                                          {"age_seconds", to_seconds(now - s.changed)},
                                          {"backends", std::move(backends)},
                                          {"acked", report.acked}});
  }
  o["members"] = std::move(members);
  if (proposal_) {
    o["fence"] = {{"backend", proposal_->fence.backend},
                  {"id", proposal_->fence.id},
                  {"seconds", to_seconds(now - proposal_->started)}};
  } else if (followed_) {
    o["fence"] = {{"backend", followed_->fence.backend},
                  {"id", followed_->fence.id},
                  {"seconds", to_seconds(now - followed_->seen)}};
  } else {
    o["fence"] = nullptr;
  }
  return o;
}

}  // namespace va::coord
