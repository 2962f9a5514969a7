#include "k8s/events.hpp"

#include <fmt/format.h>

#include <boost/json.hpp>

#include "k8s/client.hpp"
#include "k8s/objects.hpp"

namespace va::k8s {

namespace json = boost::json;

task<outcome<void>> record_event(Client& client, const EventSpec& spec) {
  const auto at = std::chrono::system_clock::now();
  const auto nanos =
      std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
  const std::string now = format_time(at);
  const json::object event{{"apiVersion", "v1"},
                           {"kind", "Event"},
                           {"metadata",
                            {{"name", fmt::format("{}.{:x}", text(&spec.involved, "name"), nanos)},
                             {"namespace", spec.namespace_}}},
                           {"involvedObject", spec.involved},
                           {"reason", spec.reason},
                           {"message", spec.message},
                           {"type", spec.type},
                           {"source", {{"component", "vllm-autoscaler"}}},
                           {"firstTimestamp", now},
                           {"lastTimestamp", now},
                           {"count", 1}};
  const std::string target = "/api/v1/namespaces/" + spec.namespace_ + "/events";
  auto r =
      co_await client.request(http::verb::post, target, json::serialize(event), "application/json");
  if (!r) {
    co_return r.error();
  }
  if (r->status >= 300) {
    co_return api_failure(http::verb::post, target, *r);
  }
  co_return outcome<void>{};
}

}  // namespace va::k8s
