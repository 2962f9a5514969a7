#pragma once
#include "support/temp_dir.hpp"

namespace va::k8s::testing {
using va::test_support::TempDir;
}  // namespace va::k8s::testing
