#pragma once
// The YAML file into the Config structs: ${VAR} expansion from the environment, every key checked
// against the ones the structs have, every value against its type. Part of config/loader.cpp's
// load(); not for use outside src/config.
#include <string>

#include "config/config.hpp"
#include "config/problems.hpp"
#include "config/text.hpp"

namespace va::config {

// Reads `file` into `c`, recording each problem with its key path; a key that is absent or of the
// wrong shape leaves its default. False when the file cannot be read or parsed at all: what
// follows would only be noise about the missing settings.
bool read_yaml_file(const std::string& file, const Env& env, Problems& problems, Config& c);

}  // namespace va::config
