// The fault matrix (docs/reliability.md): every state the backend can be in × every fault we know
// of, in virtual time against a simulated world. Each cell runs 30 minutes of virtual time and
// asserts the invariants (README.md, "Invariants"):
//   (a) a backend nobody uses is at 0 within idle_timeout of the last activity (plus the stop and
//       its retries), whatever failed, once the API answers again;
//   (b) every request is answered: granted only while a replica is ready, or refused with a reason;
//   (c) nothing is stopped with requests in flight or held (checked at each scale call);
//   (d) one successful scale-up per wake (or per external change undone), and failed calls
//       retried no faster than the backoff.
// With VA_FAULT_MATRIX_REPORT=<file> each cell appends a Markdown row with what it saw.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "unit/activator/harness.hpp"

namespace va::activator {
namespace {

using testing::Harness;

enum class Start { asleep, waking, ready_idle, ready_busy, stopping, failed };
enum class Fault {
  scale_unavailable_once,
  scale_unavailable_always,
  scale_forbidden_once,
  scale_forbidden_always,
  scale_conflict_once,
  observe_ready_0,
  observe_desired_0,
  observe_fatal,
  observe_unavailable,
  probe_fails,
  probe_times_out,
  process_exits,
  request_arrives,
  client_leaves,
  admin_wake,
  admin_sleep,
  sigterm,
  controller_throws,
};

constexpr Start kStarts[] = {Start::asleep,     Start::waking,   Start::ready_idle,
                             Start::ready_busy, Start::stopping, Start::failed};
constexpr Fault kFaults[] = {Fault::scale_unavailable_once,
                             Fault::scale_unavailable_always,
                             Fault::scale_forbidden_once,
                             Fault::scale_forbidden_always,
                             Fault::scale_conflict_once,
                             Fault::observe_ready_0,
                             Fault::observe_desired_0,
                             Fault::observe_fatal,
                             Fault::observe_unavailable,
                             Fault::probe_fails,
                             Fault::probe_times_out,
                             Fault::process_exits,
                             Fault::request_arrives,
                             Fault::client_leaves,
                             Fault::admin_wake,
                             Fault::admin_sleep,
                             Fault::sigterm,
                             Fault::controller_throws};

std::string_view name(Start s) {
  switch (s) {
    case Start::asleep:
      return "asleep";
    case Start::waking:
      return "waking";
    case Start::ready_idle:
      return "ready_idle";
    case Start::ready_busy:
      return "ready_busy";
    case Start::stopping:
      return "stopping";
    case Start::failed:
      return "failed";
  }
  return "?";
}

std::string_view name(Fault f) {
  switch (f) {
    case Fault::scale_unavailable_once:
      return "scale_unavailable_once";
    case Fault::scale_unavailable_always:
      return "scale_unavailable_always";
    case Fault::scale_forbidden_once:
      return "scale_forbidden_once";
    case Fault::scale_forbidden_always:
      return "scale_forbidden_always";
    case Fault::scale_conflict_once:
      return "scale_conflict_once";
    case Fault::observe_ready_0:
      return "observe_ready_0";
    case Fault::observe_desired_0:
      return "observe_desired_0";
    case Fault::observe_fatal:
      return "observe_fatal";
    case Fault::observe_unavailable:
      return "observe_unavailable";
    case Fault::probe_fails:
      return "probe_fails";
    case Fault::probe_times_out:
      return "probe_times_out";
    case Fault::process_exits:
      return "process_exits";
    case Fault::request_arrives:
      return "request_arrives";
    case Fault::client_leaves:
      return "client_leaves";
    case Fault::admin_wake:
      return "admin_wake";
    case Fault::admin_sleep:
      return "admin_sleep";
    case Fault::sigterm:
      return "sigterm";
    case Fault::controller_throws:
      return "controller_throws";
  }
  return "?";
}

constexpr auto kApiFaultLasts = 10min;  // an "always" fault of the API ends after this
constexpr auto kRun = 30min;
// The stop itself and its retries: 1 s doubling to 30 s for a refusal, so well within this.
constexpr auto kStopSlack = 40s;

class FaultMatrix : public ::testing::TestWithParam<std::tuple<Start, Fault>> {
 protected:
  // Brings the backend to `s`.
  void reach(Start s) {
    h.start();
    switch (s) {
      case Start::asleep:
        break;
      case Start::waking:
        h.request();
        h.time.advance(5s);
        break;
      case Start::ready_idle:
        h.request();
        ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
        h.time.advance(5s);
        break;
      case Start::ready_busy:
        h.request(5min);
        ASSERT_TRUE(h.time.run_until([&] { return h.state() == "ready"; }, 60s));
        break;
      case Start::stopping:
        h.request();
        ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
        h.scaler->scale_delay = 3s;  // the scale-down is under way when the fault comes
        ASSERT_TRUE(h.time.run_until([&] { return h.state() == "stopping"; }, 120s));
        h.time.advance(1s);
        h.scaler->scale_delay = {};
        break;
      case Start::failed:
        h.world.fatal = "CrashLoopBackOff: CUDA out of memory";
        h.request();
        ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
        h.world.fatal.clear();
        break;
    }
    ASSERT_EQ(h.state(), s == Start::ready_idle || s == Start::ready_busy ? "ready" : name(s));
  }

  void inject(Fault f) {
    auto& sc = *h.scaler;
    switch (f) {
      case Fault::scale_unavailable_once:
        sc.fail_next = {errc::scaler_unavailable};
        break;
      case Fault::scale_unavailable_always:
        sc.fail_always = errc::scaler_unavailable;
        break;
      case Fault::scale_forbidden_once:
        sc.fail_next = {errc::scaler_error};
        break;
      case Fault::scale_forbidden_always:
        sc.fail_always = errc::scaler_error;
        break;
      case Fault::scale_conflict_once:
        sc.fail_next = {errc::scaler_error};
        break;
      case Fault::observe_ready_0:
        h.world.wedged = true;
        break;
      case Fault::observe_desired_0:
        h.world.desired = 0;
        ++external_changes;
        break;
      case Fault::observe_fatal:
        h.world.fatal = "CrashLoopBackOff: CUDA out of memory";
        break;
      case Fault::observe_unavailable:
        sc.observe_unavailable = true;
        break;
      case Fault::probe_fails:
        h.world.probe_status = 500;
        break;
      case Fault::probe_times_out:
        h.world.probe_status = 0;
        break;
      case Fault::process_exits:
        h.world.fatal = "process exited with status 1";
        h.world.exit_clears_on_restart = true;
        ++external_changes;
        break;
      case Fault::request_arrives:
        h.request();
        break;
      case Fault::client_leaves: {
        auto& r = h.request();
        error_code ec;
        r.client->close(ec);
        h.time.settle();
        break;
      }
      case Fault::admin_wake:
        h.backend->wake("admin");
        break;
      case Fault::admin_sleep:
        h.backend->sleep("admin");
        break;
      case Fault::sigterm:
        h.backend->begin_shutdown();
        spawn(h.ioc.get_executor(), shut_down(), "shutdown");
        break;
      case Fault::controller_throws:
        sc.observe_throws = 1;
        break;
    }
    h.time.settle();
  }

  // Ends the faults of the API, as an outage ends.
  void lift_api_faults() {
    h.scaler->fail_always.reset();
    h.scaler->observe_unavailable = false;
    api_back = h.time.now();
  }

  task<void> shut_down() {
    co_await h.backend->shutdown();
    shutdown_done = true;
  }

  Harness h;
  int external_changes = 0;
  bool shutdown_done = false;
  Clock::time_point api_back{};
};

TEST_P(FaultMatrix, KeepsTheInvariants) {
  const auto [start, fault] = GetParam();
  reach(start);
  if (HasFatalFailure()) {
    return;
  }
  const auto calls_before = h.scaler->calls.size();
  const auto injected = h.time.now();
  inject(fault);
  h.time.advance(kApiFaultLasts);
  lift_api_faults();
  h.time.advance(kRun - kApiFaultLasts);
  const auto& calls = h.scaler->calls;

  // (b) every request answered; granted only while a replica was ready.
  for (const auto& r : h.requests) {
    ASSERT_TRUE(r.ended.has_value()) << "a request was never answered";
    if (*r.result) {
      EXPECT_TRUE(r.served_by_ready_world) << "a request was granted with no ready replica";
    } else {
      EXPECT_FALSE(r.result->error().message.empty());
    }
  }
  // (c) nothing stopped under a request.
  EXPECT_TRUE(h.scaler->violations.empty()) << h.scaler->violations.front();
  // (d) no scale-up beyond one per wake, and retries no faster than the backoff.
  EXPECT_LE(h.scaler->ups(),
            static_cast<int>(h.backend->status().at("wakes").as_uint64()) + external_changes);
  for (std::size_t i = 1; i < calls.size(); ++i) {
    if (!calls[i - 1].ok && calls[i].replicas == calls[i - 1].replicas) {
      EXPECT_GE(calls[i].at - calls[i - 1].at, 250ms) << "a failed scale call retried at once";
    }
  }
  EXPECT_LE(calls.size() - calls_before, 150u) << "scale calls in 30 minutes";

  // (a) at 0 in time, whatever failed; after SIGTERM, nothing more is called and the scaler's
  // own shutdown ran (the process scaler stops its child there).
  std::string zero = "-";
  if (fault == Fault::sigterm) {
    EXPECT_TRUE(shutdown_done);
    EXPECT_TRUE(h.scaler->shut_down);
    EXPECT_EQ(calls.size(), calls_before);
  } else {
    EXPECT_EQ(h.world.desired, 0) << "the backend is still up at the end";
    const auto last = std::max({h.last_activity(injected), api_back});
    if (h.scaler->zeroed_at && *h.scaler->zeroed_at > injected) {
      const auto took = *h.scaler->zeroed_at - last;
      EXPECT_LE(took, std::chrono::milliseconds(60s) + kStopSlack)
          << "at 0 " << std::chrono::duration_cast<std::chrono::seconds>(took).count()
          << " s after the last activity";
      zero = std::to_string(
                 std::chrono::duration_cast<std::chrono::seconds>(*h.scaler->zeroed_at - injected)
                     .count()) +
             " s";
    }
  }

  if (const char* path = std::getenv("VA_FAULT_MATRIX_REPORT")) {
    int granted = 0;
    int refused = 0;
    for (const auto& r : h.requests) {
      (*r.result ? granted : refused)++;
    }
    std::ofstream(path, std::ios::app)
        << "| " << name(start) << " | " << name(fault) << " | " << h.state() << " | "
        << h.world.desired << " | " << zero << " | " << h.scaler->ups() << " / "
        << h.scaler->downs() << " / "
        << (h.scaler->count(true, false) + h.scaler->count(false, false) - h.scaler->ups() -
            h.scaler->downs())
        << " | " << granted << " / " << refused << " | " << (HasFailure() ? "FAIL" : "pass")
        << " |\n";
  }
}

INSTANTIATE_TEST_SUITE_P(States, FaultMatrix,
                         ::testing::Combine(::testing::ValuesIn(kStarts),
                                            ::testing::ValuesIn(kFaults)),
                         [](const ::testing::TestParamInfo<FaultMatrix::ParamType>& info) {
                           return std::string(name(std::get<0>(info.param))) + "__" +
                                  std::string(name(std::get<1>(info.param)));
                         });

}  // namespace
}  // namespace va::activator
