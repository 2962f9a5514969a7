#pragma once
// The checks a loaded Config must pass: addresses, ranges, one-of values, and the rules between
// backends (unique names and models, one default). Part of config/loader.cpp's load(); not for
// use outside src/config.
#include "config/config.hpp"
#include "config/problems.hpp"

namespace va::config {

// Records every problem in `c` by its key path (named with its flag or variable, from
// `origins`), skipping paths that already have one. Names a single unnamed backend "default".
void validate(Config& c, const Origins& origins, Problems& problems);

}  // namespace va::config
