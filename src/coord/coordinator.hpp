#pragma once
// Several proxy replicas in front of the same backends (docs/high-availability.md), through
// Leases only: no pod-to-pod traffic.
//
// Every heartbeat each replica lists the group's Leases, writes its member Lease (its activity per
// backend) and, as client-go's leader election does, renews or tries to take the leader Lease.
// Any replica wakes a backend by itself; only the leader scales one down, and only through a
// fence: it announces the scale-down in its Lease, every live replica holds new requests for that
// backend and answers with its activity, and the leader goes on only if every one of them has been
// idle for idle_timeout. A replica whose Lease has not changed for its duration is dead and
// ignored; until then it counts. Expiry is judged on our own clock from when we saw a Lease
// change, never from the times written in it (clock skew).
//
// Setup checks: at start and every check_interval the store says which of its calls this replica
// may not make (LeaseStore::denied(): SelfSubjectAccessReviews for list, create and update of
// leases); they are setup_problems(), kept and logged as the kubernetes scaler's are
// (k8s/setup_check.hpp), in /status and in /readyz's answer.
//
// coordinator.cpp: the heartbeat loop, the leader Lease, the member Lease and /status;
// coordinator_fence.cpp: the fence (proposed, followed, judged, decided).
//
// Threading: runs on one executor (the backends' controllers'); status() from any thread.
#include <boost/json/object.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "activator/backend.hpp"
#include "activator/peers.hpp"
#include "coord/lease_store.hpp"
#include "coord/reports.hpp"
#include "core/time_source.hpp"
#include "k8s/setup_check.hpp"
#include "metrics/metrics.hpp"

namespace va::coord {

struct Settings {
  std::string identity;    // unique per replica
  std::string lease_name;  // the leader Lease; members are <lease_name>-<identity>
  std::chrono::milliseconds lease_duration = std::chrono::seconds(15);
  std::chrono::milliseconds heartbeat_interval = std::chrono::seconds(2);
  // Between two setup checks (RBAC can change under a running proxy).
  std::chrono::milliseconds check_interval = std::chrono::seconds(60);
};

class Coordinator final : public activator::Peers {
 public:
  Coordinator(Settings settings, Executor ex, std::unique_ptr<LeaseStore> store,
              std::vector<activator::Backend*> backends, metrics::Metrics& metrics,
              TimeSource& time);
  ~Coordinator() override;

  void start();
  // Ends the loop and gives up the Leases (the leader's for another replica to take at once; the
  // member's so that it no longer counts). A heartbeat under way and the release wait on the API
  // for shutdown_bound() at most, in all; what it has not answered by then is given up (logged),
  // and the Leases expire by themselves after lease_duration.
  task<void> shutdown();
  // Two heartbeats, at most lease_duration and at most 5 s.
  Clock::duration shutdown_bound() const;

  task<activator::StopVerdict> agree_to_stop(const std::string& backend,
                                             Clock::duration idle_timeout) override;
  void stop_decided(const std::string& backend, bool stopping) override;

  bool leading() const override;
  std::string leader() const override;
  std::size_t load_elsewhere(const std::string& backend) const override;
  boost::json::object status() const;
  // What keeps this replica from coordinating as configured, as last checked ("cannot update
  // coordination.k8s.io/leases in namespace \"llm\""); until the first check has answered, that
  // it has not. None when all is well. Any thread.
  std::vector<std::string> setup_problems() const { return checks_.problems(); }

 private:
  struct Seen {
    LeaseRecord record;
    Clock::time_point changed;  // when we saw its resourceVersion change (our clock)
  };
  // The leader's scale-down in agreement.
  struct Proposal {
    Fence fence;
    Clock::duration idle_timeout{};
    Clock::time_point started;
    std::optional<std::string> verdict;  // agreed, busy, unanswered, lost
  };
  // A fence of the leader's that this replica follows.
  struct Followed {
    Fence fence;
    Clock::time_point seen;
  };

  task<void> run();
  task<void> tick();
  task<void> release(bool leader);  // the Leases, on shutdown
  task<void> run_checks();
  // Completes shutdown_bound() after shutdown() began (never before it), or when what it is raced
  // against (`||`) ends first.
  task<void> given_up();
  void observe(std::vector<LeaseRecord> records);
  task<void> elect();
  void become_leader(const char* how);
  void step_down(const char* why);
  void follow();
  void lift_followed();
  void expire_followed();
  task<void> publish();
  void judge();
  void decide(const std::string& verdict);
  // Why a scale-down of `backend` cannot be agreed now by what the live members last wrote
  // (empty: it can), and when to ask again. `fence_id`: also require their answer to it.
  std::string objection(const std::string& backend, Clock::duration idle_timeout,
                        const std::string& fence_id, Clock::time_point& ask_again) const;

  bool live(const Seen& s) const;
  std::vector<const Seen*> live_members() const;
  std::string member_name() const { return settings_.lease_name + "-" + settings_.identity; }
  activator::Backend* backend(const std::string& name) const;
  MemberReport own_report() const;
  LeaseRecord stamped(LeaseRecord r) const;  // holder, duration and renewTime set to now
  // Records a write's outcome; true when it was written.
  bool written(const outcome<std::optional<LeaseRecord>>& r, const char* what);
  Clock::duration tick_interval() const;

  const Settings settings_;
  Executor ex_;
  std::unique_ptr<LeaseStore> store_;
  std::vector<activator::Backend*> backends_;
  metrics::Metrics& metrics_;
  TimeSource& time_;
  Timer poke_;
  Timer stop_;  // cancelled when the shutdown begins
  Timer done_;  // cancelled when a loop (heartbeats, checks) ends
  Timer check_pause_;
  k8s::SetupCheck checks_;
  bool stopping_ = false;
  bool checks_ended_ = false;
  Clock::time_point give_up_at_ = Clock::time_point::max();  // set when the shutdown begins
  bool ended_ = false;
  unsigned long fences_ = 0;

  mutable std::mutex mu_;  // guards what status() reads; the rest is the executor's
  std::map<std::string, Seen> seen_;
  bool leading_ = false;
  Clock::time_point leader_since_;
  Clock::time_point renewed_;  // the leader Lease was last written
  std::string leader_;         // its holder, as last seen
  std::optional<Proposal> proposal_;
  std::optional<Followed> followed_;
  std::string lifted_;        // the id of the last fence followed and let go
  Timer* decided_ = nullptr;  // agree_to_stop's wait, cancelled when the verdict is in
  int stopping_writes_ = 0;   // writes left that announce an agreed fence as stopping
};

}  // namespace va::coord
