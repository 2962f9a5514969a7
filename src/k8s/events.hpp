#pragma once
// Recording a core/v1 Event about an object, as `kubectl describe` shows them.
#include <boost/json/object.hpp>
#include <string>

#include "core/errors.hpp"
#include "core/net.hpp"

namespace va::k8s {

class Client;

struct EventSpec {
  std::string namespace_;
  boost::json::object involved;  // apiVersion, kind, namespace, name (uid when known)
  std::string reason;            // CamelCase: ScaledUp, ScaledToZero, ...
  std::string message;
  std::string type = "Normal";  // or Warning
};

// POSTs the Event (named after the involved object and the time, as client-go does), source
// component vllm-autoscaler. A non-2xx answer is a Failure naming the API error.
task<outcome<void>> record_event(Client& client, const EventSpec& event);

}  // namespace va::k8s
