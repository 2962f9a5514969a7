#pragma once
// Scales a Deployment between 0 and N through its Scale subresource (README.md, "Kubernetes").
//
// What it knows comes from two list-then-watch loops (k8s/reflector.hpp) on the backend's
// controller's executor: the Deployment (fieldSelector=metadata.name=NAME, the only form RBAC
// resourceNames allows) and the pods of the Scale's status.selector. Each watch asks for a short
// timeoutSeconds (15-25 s) and one that has not ended 5 s after that is taken as dead, so that a
// connection gone silent is found within 30 s. A watch that ends is resumed from the last
// resourceVersion; an expired one (HTTP 410, an ERROR event 410/Expired/Gone, 1.20's 500
// "compacted") lists again. An API that is down is retried with backoff and jitter, never in a
// tight loop.
//
// observe() answers from what the watches saw: desired = spec.replicas; ready = readyReplicas once
// status.observedGeneration has caught up with metadata.generation after our own scale-up;
// fatal when a pod waits in CrashLoopBackOff, ImagePullBackOff, ErrImagePull and the like; an
// unschedulable pod is a reason, not fatal (the cluster may add a node). After a PATCH the
// Deployment as cached is older than the PATCH until the watch delivers the PATCH's own
// resourceVersion, or a LIST sent after the PATCH was answered delivers the Deployment: until
// then observe() answers the replicas asked for (RVs are compared for equality only, as they are
// opaque; a LIST sent before the PATCH was answered may be older than it).
//
// scale_to() is a merge PATCH of .../deployments/NAME/scale, retried on 429 (Retry-After), 409 and
// 5xx for `retry_for`, then errc::scaler_unavailable, as is a transport error at once (the Backend
// retries those with backoff); other answers (403, 404, 422) are errc::scaler_error. Each change of
// replicas records a core/v1 Event on the Deployment (ScaledUp / ScaledDown / ScaledToZero, with
// the cause), as `kubectl describe deployment` shows. shutdown() stops the watches and leaves the
// Deployment as it is, for the next proxy to adopt.
//
// Setup checks (kubernetes_setup.cpp): from the first call on, and then every `check_interval`,
// SelfSubjectAccessReviews ask whether the proxy may make each request above, and a GET of the
// Scale whether the Deployment exists; what is missing is setup_problems(), kept and logged as
// k8s/setup_check.hpp says: until the first check has answered that is one problem ("not checked
// yet"), so that a proxy with a bad Role is never ready even for a moment; a check the API does
// not answer changes nothing (an API outage must not make every proxy unready), but the first
// one's failure clears "not checked yet".
//
// Threading: every member runs on the executor given to the constructor (the Backend's
// controller's).
#include <boost/json/object.hpp>
#include <deque>
#include <memory>
#include <random>
#include <string>

#include "k8s/client.hpp"
#include "k8s/reflector.hpp"
#include "k8s/setup_check.hpp"
#include "scaler/scaler.hpp"

namespace va::scaler {

class KubernetesScaler final : public Scaler {
 public:
  struct Settings {
    std::string backend;
    std::string namespace_;
    std::string deployment;
    k8s::ClusterConfig cluster;
    // A healthy apiserver answers in milliseconds; a call that takes seconds is reported (and
    // retried) rather than waited on for the client's default 30 s.
    k8s::Client::Settings client{.connect_timeout = std::chrono::seconds(3),
                                 .request_timeout = std::chrono::seconds(5)};
    // A scale PATCH answered 429, 409 or 5xx is retried this long; a transport error (API down,
    // timed out) is returned at once as errc::scaler_unavailable for the Backend to retry.
    std::chrono::milliseconds retry_for = std::chrono::seconds(3);
    // The two watches (k8s/reflector.hpp); its backoff_max bounds the setup checks' too.
    k8s::WatchTiming watch = {};
    // Between two setup checks (RBAC can change under a running proxy).
    std::chrono::milliseconds check_interval = std::chrono::seconds(60);
  };

  KubernetesScaler(Settings settings, Executor ex);
  ~KubernetesScaler() override;

  task<outcome<void>> scale_to(int replicas, std::string cause) override;
  task<outcome<Observed>> observe() override;
  task<void> shutdown() override;

 private:
  void start();
  task<void> run_deployment();
  task<void> run_pods();
  // The Deployment's watch: what a LIST or an event means for our last PATCH.
  void deployment_listed();
  void deployment_event(const k8s::WatchEvent& e);
  task<void> run_checks();
  // One setup check: the problems found, or a Failure when the API did not answer.
  task<outcome<std::vector<std::string>>> check_setup();
  task<std::string> pod_selector();
  task<void> pause(std::chrono::milliseconds d);
  // `first` doubling per failure up to watch_backoff_max, with ±50% jitter.
  std::chrono::milliseconds backoff(int failures, std::chrono::milliseconds first = 500ms);
  void loop_done();

  const boost::json::object* deployment() const;
  Observed judge_pods(Observed o) const;
  task<void> record_event(int from, int to, const std::string& cause);

  Settings settings_;
  Executor ex_;
  k8s::Client client_;
  std::string scale_path_;
  k8s::Reflector deployment_;
  k8s::Reflector pods_;
  std::string selector_error_;  // reading the pods' selector failed; "" once it is known
  k8s::SetupCheck checks_;
  bool started_ = false;
  bool stopping_ = false;
  int running_ = 0;  // loops not yet ended
  Timer stop_;       // expires at min() on shutdown: every pause() ends at once
  Timer idle_;       // expires at min() when the last loop ended
  std::mt19937 rng_;

  // After our PATCH: the Deployment's resourceVersion it produced, until the watch delivers it,
  // or a LIST sent after the PATCH was answered (counted by patches_) holds it.
  std::string pending_rv_;
  unsigned long patches_ = 0;           // scale PATCHes answered 200
  unsigned long patches_at_list_ = 0;   // patches_ when the Deployment's last LIST was sent
  std::deque<std::string> recent_rvs_;  // of the Deployment's last watch events
  int pending_replicas_ = 0;
  Clock::time_point pending_since_{};
  // Scaled up from 0 by us and not yet seen ready. A scale between two counts above 0 (the
  // autoscaler's) leaves the ready pods as the cache shows them: they still serve.
  bool waking_ = false;
};

}  // namespace va::scaler
