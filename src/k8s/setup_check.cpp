#include "k8s/setup_check.hpp"

#include "core/backoff.hpp"
#include "core/log.hpp"

namespace va::k8s {

SetupCheck::SetupCheck(Settings settings)
    : settings_(std::move(settings)),
      rng_(std::random_device{}()),
      problems_{settings_.unchecked} {}

std::chrono::milliseconds SetupCheck::answered(outcome<std::vector<std::string>> found) {
  if (!found) {
    log::warn("kubernetes setup check failed; trying again",
              {{settings_.key, settings_.who}, {"error", found.error().message}});
    if (!answered_) {
      answered_ = true;
      std::lock_guard lock(mu_);
      problems_.clear();  // nothing known against it: an API outage is not a bad Role
    }
    const auto base = va::backoff(++failures_, std::chrono::seconds(1), settings_.backoff_max);
    std::uniform_real_distribution<double> jitter(0.5, 1.5);
    return std::chrono::milliseconds(static_cast<long>(base.count() * jitter(rng_)));
  }
  failures_ = 0;
  answered_ = true;
  if (*found != problems()) {
    for (const auto& p : *found) {
      log::error("setup problem", {{settings_.key, settings_.who}, {"problem", p}});
    }
    if (found->empty()) {
      log::info(settings_.all_well, {{settings_.key, settings_.who}});
    }
    std::lock_guard lock(mu_);
    problems_ = std::move(*found);
  }
  return settings_.interval;
}

std::vector<std::string> SetupCheck::problems() const {
  std::lock_guard lock(mu_);
  return problems_;
}

}  // namespace va::k8s
