#pragma once
// The readiness probe: GET <upstream><path> on a fresh connection, with the configured headers.
#include <map>
#include <string>

#include "upstream/pool.hpp"

namespace va::upstream {

struct ProbeResult {
  unsigned status = 0;  // 0 when no HTTP answer came
  error_code error;     // connection refused while vLLM loads, timeouts, …
  std::string body;
};

task<ProbeResult> probe(Executor ex, const Target& target, const std::string& path,
                        const std::map<std::string, std::string>& headers,
                        std::chrono::milliseconds timeout);

}  // namespace va::upstream
