#pragma once
// The bookkeeping of a part's setup checks (SelfSubjectAccessReviews and the like, asked at start
// and every `interval`): what one check's answer changes, what is logged and when to ask again.
// The kubernetes scaler (scaler/kubernetes_setup.cpp) and the coordination (coord/coordinator.cpp)
// each ask their own questions in their own loop and keep the answers here.
//
// Until the first check has answered there is one problem, `unchecked`, so that a proxy with a bad
// Role is never ready even for a moment. A check the API does not answer changes nothing (an API
// outage must not make every proxy unready) and is asked again with backoff, but the first one's
// failure clears `unchecked`. A change is logged: each problem as an error `setup problem`, none
// left as `all_well`.
//
// Threading: answered() from one coroutine at a time; problems() from any thread.
#include <chrono>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "core/errors.hpp"

namespace va::k8s {

class SetupCheck {
 public:
  struct Settings {
    std::string key;        // the log field that says whose check it is: "backend", "coordination"
    std::string who;        // its value
    std::string unchecked;  // the problem until the first answer
    std::string all_well;   // logged once no problem is left
    std::chrono::milliseconds interval = std::chrono::seconds(60);
    // After a check the API did not answer: 1 s doubling to this, each with ±50% jitter.
    std::chrono::milliseconds backoff_max = std::chrono::seconds(10);
  };

  explicit SetupCheck(Settings settings);

  // Records one check's answer (a Failure: the API did not answer); returns how long to wait
  // before the next.
  std::chrono::milliseconds answered(outcome<std::vector<std::string>> found);
  // What stops the part from working as configured, as last checked; one sentence each.
  std::vector<std::string> problems() const;

 private:
  const Settings settings_;
  bool answered_ = false;
  int failures_ = 0;
  std::mt19937 rng_;
  mutable std::mutex mu_;  // guards problems_
  std::vector<std::string> problems_;
};

}  // namespace va::k8s
