// The kubernetes scaler against the in-process HTTPS server: how a scale PATCH is retried or
// refused, the Event it records, and what observe() makes of the lists it reads. The real control
// plane tests (test/kubernetes/) cover the watches against a real apiserver.
#include "scaler/kubernetes_scaler.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <deque>
#include <functional>
#include <set>

#include "unit/k8s/tls_server.hpp"

namespace va::scaler {
namespace {

// The head of a watch's answer: its events follow in chunks.
constexpr std::string_view kWatchHead =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";

using k8s::testing::reply;
using k8s::testing::Reply;
using k8s::testing::Request;
using k8s::testing::TlsServer;

constexpr std::string_view kScale = "/apis/apps/v1/namespaces/llm/deployments/vllm/scale";
constexpr std::string_view kEvents = "/api/v1/namespaces/llm/events";
constexpr std::string_view kReviews = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

std::string deployment_list(int replicas, int generation, int observed, int ready) {
  return R"({"kind":"DeploymentList","metadata":{"resourceVersion":"100"},"items":[{"metadata":)"
         R"({"name":"vllm","namespace":"llm","uid":"u-1","resourceVersion":"99","generation":)" +
         std::to_string(generation) + R"(},"spec":{"replicas":)" + std::to_string(replicas) +
         R"(},"status":{"observedGeneration":)" + std::to_string(observed) +
         R"(,"readyReplicas":)" + std::to_string(ready) + "}}]}";
}

class KubernetesScalerTest : public k8s::testing::TlsApiTest {
 protected:
  // Answers the lists and the Scale GET from the members below, the PATCHes from `patches` (in
  // order; 200 with a Scale at RV 101 once it is empty), Events with 201; watches never answer.
  std::optional<Reply> answer(const Request& req) {
    const std::string target(req.target());
    if (req.method() == http::verb::post && target == kReviews) {
      const auto attributes = boost::json::parse(req.body()).at("spec").at("resourceAttributes");
      const std::string what = std::string(attributes.at("verb").as_string()) + " " +
                               std::string(attributes.at("resource").as_string());
      return reply(http::status::created,
                   std::string(R"({"kind":"SelfSubjectAccessReview","status":{"allowed":)") +
                       (denied.contains(what) ? "false" : "true") + "}}");
    }
    if (!deployment_exists && target == kScale) {
      return reply(http::status::not_found, R"({"kind":"Status","code":404})");
    }
    if (req.method() == http::verb::patch && target == kScale) {
      if (!patches.empty()) {
        auto r = std::move(patches.front());
        patches.pop_front();
        return r;
      }
      return reply(http::status::ok,
                   R"({"kind":"Scale","metadata":{"name":"vllm","resourceVersion":"101"},)"
                   R"("spec":{"replicas":1},"status":{"replicas":0,"selector":"app=vllm"}})");
    }
    if (req.method() == http::verb::post && target == kEvents) {
      return reply(http::status::created, std::string(req.body()));
    }
    if (target.find("watch=1") != std::string::npos) {
      return std::nullopt;
    }
    if (target == kScale) {
      return reply(http::status::ok,
                   R"({"kind":"Scale","spec":{},"status":{"replicas":0,"selector":"app=vllm"}})");
    }
    if (target.starts_with("/apis/apps/v1/namespaces/llm/deployments?")) {
      return reply(http::status::ok, deployments);
    }
    if (target.starts_with("/api/v1/namespaces/llm/pods?")) {
      return reply(http::status::ok, pods);
    }
    return reply(http::status::not_found, "{}");
  }

  KubernetesScaler make(const TlsServer& server,
                        std::chrono::milliseconds check_interval = std::chrono::seconds(60)) {
    return KubernetesScaler(settings(server, check_interval), ioc_.get_executor());
  }
  KubernetesScaler::Settings settings(
      const TlsServer& server,
      std::chrono::milliseconds check_interval = std::chrono::seconds(60)) {
    KubernetesScaler::Settings s{
        .backend = "b", .namespace_ = "llm", .deployment = "vllm", .cluster = cluster(server)};
    s.check_interval = check_interval;
    return s;
  }

  // A cluster config for an API server that is not there: nothing listens on its port any more.
  k8s::ClusterConfig unreachable() {
    k8s::ClusterConfig c;
    {
      Acceptor gone(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
      c.port = std::to_string(gone.local_endpoint().port());
    }
    c.host = "127.0.0.1";
    c.server_name = "127.0.0.1";
    c.ca_pem = ca_.cert_pem;
    return c;
  }

  // Runs the io_context until `s`'s setup problems are `want` (at most 10 s).
  std::vector<std::string> problems_become(const KubernetesScaler& s,
                                           const std::vector<std::string>& want) {
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (s.setup_problems() != want && Clock::now() < deadline) {
      ioc_.run_for(std::chrono::milliseconds(5));
    }
    return s.setup_problems();
  }

  template <class T>
  T drive(task<T> t) {
    std::optional<T> out;
    net::co_spawn(ioc_, std::move(t), [&](std::exception_ptr e, T r) {
      if (e) {
        std::rethrow_exception(e);
      }
      out.emplace(std::move(r));
    });
    ioc_.restart();
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!out && Clock::now() < deadline) {
      ioc_.run_for(std::chrono::milliseconds(5));
    }
    EXPECT_TRUE(out.has_value()) << "did not complete";
    return out ? std::move(*out) : T(Failure{errc::ok, "did not complete"});
  }

  // The scaler's loops end before it is destroyed.
  void stop(KubernetesScaler& s) {
    bool done = false;
    net::co_spawn(ioc_, s.shutdown(), [&](std::exception_ptr) { done = true; });
    while (!done) {
      ioc_.run_for(std::chrono::milliseconds(5));
    }
  }

  std::vector<const k8s::testing::Received*> requests(const TlsServer& server, http::verb verb,
                                                      std::string_view target) {
    std::vector<const k8s::testing::Received*> out;
    for (const auto& r : server.received) {
      if (r.request.method() == verb && r.request.target() == target) {
        out.push_back(&r);
      }
    }
    return out;
  }

  // Writes `r` as the whole answer of a streamed request (the connection closes after it).
  static task<void> write(TlsServer::Stream& s, Reply r) {
    r.version(11);
    r.keep_alive(false);
    r.prepare_payload();
    co_await http::async_write(s, r, use_nothrow);
  }
  static task<void> write(TlsServer::Stream& s, const std::string& bytes) {
    co_await net::async_write(s, net::buffer(bytes), use_nothrow);
  }
  static task<void> sleep(TlsServer::Stream& s, std::chrono::milliseconds d) {
    Timer t(s.get_executor(), d);
    co_await t.async_wait(use_nothrow);
  }
  // Every watch gets a chunked head; a watch of the Deployment is then served by `deployment`
  // (given its target): unless it answers true (the watch ends there), it then stays open and
  // silent, like every other watch.
  using WatchServer = std::function<task<bool>(const std::string& target, TlsServer::Stream&)>;
  static void serve_deployment_watches(TlsServer& server, WatchServer deployment) {
    server.stream_with(
        [deployment](const Request& req, TlsServer::Stream& s) -> task<void> {
          co_await write(s, std::string(kWatchHead));
          const std::string target(req.target());
          if (target.starts_with("/apis/apps/v1/namespaces/llm/deployments?") &&
              co_await deployment(target, s)) {
            co_return;
          }
          co_await sleep(s, std::chrono::hours(1));
        },
        [](const Request& r) { return r.target().find("watch=1") != std::string::npos; });
  }

  static bool is_list(const Request& r) {
    return r.target().starts_with("/apis/apps/v1/namespaces/llm/deployments?") &&
           r.target().find("watch=1") == std::string::npos;
  }

  // Runs the io_context until `done` or for at most `limit`.
  void run_until(const std::function<bool()>& done,
                 std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    k8s::testing::run_until(ioc_, done, limit);
  }

  std::deque<Reply> patches;
  std::set<std::string> denied;  // "<verb> <resource>" the access reviews deny
  bool deployment_exists = true;
  std::string deployments = deployment_list(0, 1, 1, 0);
  std::string pods = R"({"kind":"PodList","metadata":{"resourceVersion":"100"},"items":[]})";
};

TEST_F(KubernetesScalerTest, APatchAnswered429500Or409IsRetriedThenRecordsAnEvent) {
  auto busy = reply(http::status::too_many_requests, R"({"kind":"Status","message":"slow down"})");
  busy.set(http::field::retry_after, "0");
  patches.push_back(std::move(busy));
  patches.push_back(reply(http::status::internal_server_error, "{}"));
  patches.push_back(reply(http::status::conflict, R"({"kind":"Status","message":"modified"})"));
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  auto scaler = make(server);
  ASSERT_TRUE(drive(scaler.observe()));  // as the Backend does first: the Deployment is listed
  auto r = drive(scaler.scale_to(1, "3 requests held"));
  ASSERT_TRUE(r) << r.error().message;
  const auto sent = requests(server, http::verb::patch, kScale);
  ASSERT_EQ(sent.size(), 4u);
  EXPECT_EQ(sent[0]->request.body(), R"({"spec":{"replicas":1}})");
  EXPECT_EQ(sent[0]->request[http::field::content_type], "application/merge-patch+json");
  const auto events = requests(server, http::verb::post, kEvents);
  ASSERT_EQ(events.size(), 1u);
  const auto event = boost::json::parse(events[0]->request.body()).as_object();
  EXPECT_EQ(event.at("reason").as_string(), "ScaledUp");
  EXPECT_EQ(event.at("message").as_string(), "Scaled up from 0 to 1 replica: 3 requests held");
  EXPECT_EQ(event.at("involvedObject").at("kind").as_string(), "Deployment");
  EXPECT_EQ(event.at("involvedObject").at("uid").as_string(), "u-1");
  EXPECT_EQ(event.at("source").at("component").as_string(), "vllm-autoscaler");
  // Until the watch delivers the PATCH's resourceVersion, the older list does not undo it.
  auto o = drive(scaler.observe());
  ASSERT_TRUE(o);
  EXPECT_EQ(o->desired, 1);
  EXPECT_EQ(o->ready, 0);
  stop(scaler);
}

TEST_F(KubernetesScalerTest, APatchThatChangesNothingIsNotWaitedFor) {
  deployments = deployment_list(1, 2, 2, 1);  // already up (at resourceVersion 99)
  patches.push_back(reply(
      http::status::ok, R"({"kind":"Scale","metadata":{"name":"vllm","resourceVersion":"99"},)"
                        R"("spec":{"replicas":1},"status":{"replicas":1,"selector":"app=vllm"}})"));
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  auto scaler = make(server);
  ASSERT_TRUE(drive(scaler.observe()));
  ASSERT_TRUE(drive(scaler.scale_to(1, "1 request held")));
  auto o = drive(scaler.observe());
  ASSERT_TRUE(o);
  EXPECT_EQ(o->desired, 1);
  EXPECT_EQ(o->ready, 1);  // no wait for a watch event that will not come
  EXPECT_TRUE(requests(server, http::verb::post, kEvents).empty());  // 1 → 1 is no scale
  stop(scaler);
}

TEST_F(KubernetesScalerTest, AListSentBeforeOurPatchAndAnsweredAfterItDoesNotUndoIt) {
  // The first LIST of the Deployment is held until our scale-up has been answered: it shows the
  // Deployment at 0, as it was when the LIST was read.
  bool patched = false;
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  server.stream_with(
      [&](const Request&, TlsServer::Stream& s) -> task<void> {
        while (!patched) {
          co_await sleep(s, std::chrono::milliseconds(5));
        }
        co_await write(s, reply(http::status::ok, deployments));
      },
      is_list);
  auto scaler = make(server);
  net::co_spawn(ioc_, scaler.observe(), net::detached);  // starts the watches: the LIST is sent
  const auto listed = [&] {
    return std::any_of(server.received.begin(), server.received.end(),
                       [](const auto& r) { return is_list(r.request); });
  };
  run_until(listed);
  ASSERT_TRUE(listed());
  ASSERT_TRUE(drive(scaler.scale_to(1, "1 request held")));  // answered at resourceVersion 101
  patched = true;
  std::optional<outcome<Observed>> o;
  for (int i = 0; i < 100 && !(o && *o); ++i) {
    o = drive(scaler.observe());
  }
  ASSERT_TRUE(o && *o);
  EXPECT_EQ((*o)->desired, 1);  // not the list's 0: the watch has not delivered our PATCH yet
  EXPECT_EQ((*o)->ready, 0);
  stop(scaler);
}

TEST_F(KubernetesScalerTest, AWatchThatGoesSilentIsFoundDeadAndResumedWithinItsTimeout) {
  // The first watch of the Deployment is answered, then nothing more ever comes, and it never
  // ends: the apiserver died, or a proxy on the way dropped the connection, without a reset.
  // Meanwhile the Deployment became ready; the next watch delivers that.
  const std::string ready_event =
      R"({"type":"MODIFIED","object":{"kind":"Deployment","metadata":{"name":"vllm",)"
      R"("namespace":"llm","uid":"u-1","resourceVersion":"102","generation":2},)"
      R"("spec":{"replicas":1},"status":{"observedGeneration":2,"readyReplicas":1}}})"
      "\n";
  std::vector<std::pair<Clock::time_point, std::string>> watches;  // of the Deployment
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  serve_deployment_watches(server,
                           [&](const std::string& target, TlsServer::Stream& s) -> task<bool> {
                             watches.emplace_back(Clock::now(), target);
                             if (watches.size() == 2) {
                               co_await write(s, k8s::testing::chunk(ready_event));
                             }
                             co_return false;  // silent, never ended
                           });
  auto s = settings(server);
  s.watch.timeout_min = s.watch.timeout_max = std::chrono::seconds(1);
  s.watch.grace = std::chrono::milliseconds(300);
  KubernetesScaler scaler(std::move(s), ioc_.get_executor());
  auto o = drive(scaler.observe());
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->ready, 0);
  run_until([&] { return !watches.empty(); });
  ASSERT_FALSE(watches.empty());
  // The change made meanwhile is seen through the next watch, without waiting minutes.
  const auto began = watches[0].first;
  const auto ready = [&] {
    auto seen = drive(scaler.observe());
    return seen && seen->ready == 1;
  };
  run_until(ready, std::chrono::seconds(5));
  const auto seen_at = Clock::now();
  ASSERT_GE(watches.size(), 2u) << "the silent watch was trusted";
  EXPECT_TRUE(ready());
  const auto detected = watches[1].first - began;
  std::printf("dead watch replaced after %lld ms, its change observed after %lld ms\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(detected).count()),
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(seen_at - began).count()));
  // timeoutSeconds (1 s) + grace (300 ms) + the first retry's backoff (250 to 750 ms).
  EXPECT_GE(detected, std::chrono::milliseconds(1300));
  EXPECT_LT(detected, std::chrono::milliseconds(2500));
  const auto& first = watches[0].second;
  EXPECT_NE(first.find("&timeoutSeconds=1"), std::string::npos) << first;
  EXPECT_NE(first.find("&allowWatchBookmarks=true"), std::string::npos) << first;
  // Resumed from where it was, without a LIST.
  EXPECT_NE(watches[1].second.find("&resourceVersion=100&"), std::string::npos)
      << watches[1].second;
  EXPECT_EQ(std::count_if(server.received.begin(), server.received.end(),
                          [](const auto& r) { return is_list(r.request); }),
            1);
  stop(scaler);
}

TEST_F(KubernetesScalerTest, AWatchThatEndsIsResumedFromItsBookmarkWithoutAList) {
  // The API server ends the first watch at its timeoutSeconds, after the bookmark it sends just
  // before; the next watch starts from the bookmark's resourceVersion.
  std::vector<std::string> watches;  // of the Deployment
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  serve_deployment_watches(
      server, [&](const std::string& target, TlsServer::Stream& s) -> task<bool> {
        watches.push_back(target);
        if (watches.size() == 1) {
          co_await write(s,
                         k8s::testing::chunk(R"({"type":"BOOKMARK","object":{"kind":"Deployment",)"
                                             R"("metadata":{"resourceVersion":"150"}}})"
                                             "\n"));
          co_await sleep(s, std::chrono::seconds(1));
          co_await write(s, k8s::testing::chunk(""));
          co_return true;
        }
        co_return false;
      });
  auto s = settings(server);
  s.watch.timeout_min = s.watch.timeout_max = std::chrono::seconds(1);
  KubernetesScaler scaler(std::move(s), ioc_.get_executor());
  ASSERT_TRUE(drive(scaler.observe()));
  run_until([&] { return watches.size() >= 2; });
  ASSERT_GE(watches.size(), 2u);
  EXPECT_NE(watches[0].find("&resourceVersion=100&"), std::string::npos) << watches[0];
  EXPECT_NE(watches[1].find("&resourceVersion=150&"), std::string::npos) << watches[1];
  EXPECT_EQ(std::count_if(server.received.begin(), server.received.end(),
                          [](const auto& r) { return is_list(r.request); }),
            1);
  stop(scaler);
}

TEST_F(KubernetesScalerTest, AForbiddenPatchFailsAtOnceNamingTheApiError) {
  patches.push_back(reply(http::status::forbidden,
                          R"({"kind":"Status","message":"deployments.apps \"vllm\" is )"
                          R"(forbidden: User cannot patch resource"})"));
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  auto scaler = make(server);
  auto r = drive(scaler.scale_to(1, "1 request held"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::scaler_error);
  EXPECT_NE(r.error().message.find("403 Forbidden: deployments.apps \"vllm\" is forbidden"),
            std::string::npos)
      << r.error().message;
  EXPECT_EQ(requests(server, http::verb::patch, kScale).size(), 1u);
  EXPECT_TRUE(requests(server, http::verb::post, kEvents).empty());
  stop(scaler);
}

TEST_F(KubernetesScalerTest, AnApiThatIsDownIsUnavailableAtOnce) {
  const auto c = unreachable();
  const auto& port = c.port;
  KubernetesScaler scaler({.backend = "b", .namespace_ = "llm", .deployment = "vllm", .cluster = c},
                          ioc_.get_executor());
  const auto start = Clock::now();
  auto r = drive(scaler.scale_to(1, "1 request held"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::scaler_unavailable);
  EXPECT_NE(r.error().message.find("kubernetes API https://127.0.0.1:" + port), std::string::npos);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  auto o = drive(scaler.observe());
  ASSERT_FALSE(o);
  EXPECT_EQ(o.error().code, errc::scaler_unavailable);
  stop(scaler);
}

TEST_F(KubernetesScalerTest, ReplicasAndReadinessComeFromTheListedDeployment) {
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  deployments = deployment_list(1, 3, 2, 1);  // readyReplicas from before generation 3
  {
    auto scaler = make(server);
    auto o = drive(scaler.observe());
    ASSERT_TRUE(o) << o.error().message;
    EXPECT_EQ(o->desired, 1);
    EXPECT_EQ(o->ready, 1);  // not ours to judge: nobody is waking it
    stop(scaler);
  }
}

TEST_F(KubernetesScalerTest, ACrashLoopingPodIsFatalAndAnUnschedulableOneIsAReason) {
  pods = R"({"kind":"PodList","metadata":{"resourceVersion":"100"},"items":[{"metadata":)"
         R"({"name":"vllm-abc"},"status":{"containerStatuses":[{"name":"vllm","state":{"waiting":)"
         R"({"reason":"CrashLoopBackOff","message":"back-off 10s"}},"lastState":{"terminated":)"
         R"({"exitCode":1,"message":"CUDA out of memory"}}}]}}]})";
  deployments = deployment_list(1, 2, 2, 0);
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  {
    auto scaler = make(server);
    std::optional<Observed> seen;
    for (int i = 0; i < 100 && !(seen && seen->fatal); ++i) {
      auto o = drive(scaler.observe());
      ASSERT_TRUE(o);
      seen = *o;
      ioc_.run_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(seen && seen->fatal);
    EXPECT_EQ(seen->reason,
              "pod vllm-abc: container vllm: CrashLoopBackOff: back-off 10s (last exit code 1: "
              "CUDA out of memory)");
    stop(scaler);
  }
  pods = R"({"kind":"PodList","metadata":{"resourceVersion":"100"},"items":[{"metadata":)"
         R"({"name":"vllm-def"},"status":{"phase":"Pending","conditions":[{"type":"PodScheduled",)"
         R"("status":"False","reason":"Unschedulable","message":"0/3 nodes are available"}]}}]})";
  {
    auto scaler = make(server);
    std::optional<Observed> seen;
    for (int i = 0; i < 100 && !(seen && !seen->reason.empty()); ++i) {
      auto o = drive(scaler.observe());
      ASSERT_TRUE(o);
      seen = *o;
      ioc_.run_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(seen);
    EXPECT_FALSE(seen->fatal);
    EXPECT_EQ(seen->reason, "pod vllm-def is unschedulable: 0/3 nodes are available");
    stop(scaler);
  }
}

TEST_F(KubernetesScalerTest, SetupProblemsNameEachDeniedRequestUntilTheRoleAllowsIt) {
  denied = {"patch deployments", "create events"};
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  auto scaler = make(server, std::chrono::milliseconds(50));
  // Not ready before the first check has answered.
  ASSERT_EQ(scaler.setup_problems().size(), 1u);
  EXPECT_NE(scaler.setup_problems()[0].find("not checked yet"), std::string::npos);
  ASSERT_TRUE(drive(scaler.observe()));
  const std::vector<std::string> want = {
      R"(cannot patch apps/deployments/scale "vllm" in namespace "llm")",
      R"(cannot create events in namespace "llm")"};
  EXPECT_EQ(problems_become(scaler, want), want);
  const auto reviews = requests(server, http::verb::post, kReviews);
  ASSERT_GE(reviews.size(), 7u);
  const auto first = boost::json::parse(reviews[1]->request.body());
  EXPECT_EQ(first.at("kind").as_string(), "SelfSubjectAccessReview");
  EXPECT_EQ(boost::json::serialize(first.at("spec").at("resourceAttributes")),
            R"({"namespace":"llm","verb":"patch","group":"apps","resource":"deployments",)"
            R"("subresource":"scale","name":"vllm"})");
  // The Role is mended: the next check clears them.
  denied.clear();
  EXPECT_EQ(problems_become(scaler, {}), std::vector<std::string>{});
  // The Deployment goes away.
  deployment_exists = false;
  const std::vector<std::string> gone = {"deployment llm/vllm not found"};
  EXPECT_EQ(problems_become(scaler, gone), gone);
  stop(scaler);
}

TEST_F(KubernetesScalerTest, ASetupCheckTheApiDoesNotAnswerReportsNothing) {
  KubernetesScaler scaler(
      {.backend = "b", .namespace_ = "llm", .deployment = "vllm", .cluster = unreachable()},
      ioc_.get_executor());
  drive(scaler.observe());
  // An API outage is not a bad Role: it must not make every proxy unready.
  EXPECT_EQ(problems_become(scaler, {}), std::vector<std::string>{});
  stop(scaler);
}

}  // namespace
}  // namespace va::scaler
