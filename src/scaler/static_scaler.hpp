#pragma once
// A backend that is always there: never scales. The health probe alone decides readiness.
#include "scaler/scaler.hpp"

namespace va::scaler {

class StaticScaler final : public Scaler {
 public:
  task<outcome<void>> scale_to(int replicas, std::string cause) override;
  task<outcome<Observed>> observe() override;
};

}  // namespace va::scaler
