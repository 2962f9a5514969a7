#pragma once
// The whole configuration as plain structs (README.md, "Configuration"). Every default here is the
// default when the key is absent. Only config::load (src/config) reads YAML, flags or the
// environment; every other module receives these structs (or parts of them) by reference.
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/config_error.hpp"

namespace va::config {

using Duration = std::chrono::milliseconds;

struct Log {
  std::string level = "info";   // trace | debug | info | warn | error
  std::string format = "json";  // json | text
};

struct Auth {
  std::string api_keys_file;          // one key per line; blank lines and `#` comments ignored
  std::vector<std::string> api_keys;  // inline keys (after ${VAR} expansion)
  // Filled by the loader: the keys from both sources, ready for comparison.
  std::vector<std::string> keys;
};

struct Limits {
  std::size_t max_header_bytes = 16384;
  std::size_t max_body_bytes = 16777216;
  std::size_t max_pending_bytes = 67108864;
  std::size_t max_connections = 10000;
  // A request head that has begun (and the first of a new connection) must arrive within this.
  Duration header_timeout = std::chrono::seconds(10);
  // How long a keep-alive connection may idle between two requests: longer than the idle time of
  // whatever keeps connections to us open (ingress-nginx and ALB 60 s), so that we never close one
  // just as a request is sent on it. nginx's default.
  Duration keepalive_timeout = std::chrono::seconds(75);
  // How long a write to the client may make no progress (nginx's send_timeout): the time between
  // two writes the client's socket took, never a limit on the whole response. Then the response is
  // cut: a client that stopped reading must not hold its backend awake.
  Duration send_timeout = std::chrono::seconds(60);
  Duration shutdown_timeout = std::chrono::seconds(30);
};

struct Health {
  std::string path = "/health";
  Duration interval = std::chrono::seconds(1);
  std::map<std::string, std::string> headers;
};

// Where a kubernetes scaler's cluster is described: resolved by the loader from the scaler's
// settings and the environment (config/kubeconfig.hpp), so that nothing after it reads the
// environment. Left empty for the other scaler types.
struct ClusterSource {
  enum class Kind {
    none,        // neither scaler.kubeconfig, KUBECONFIG, HOME nor the service variables is set
    kubeconfig,  // `files`, merged as kubectl merges them
    in_cluster,  // the pod's service account
  };
  Kind kind = Kind::none;
  std::vector<std::string> files;
  std::string service_host, service_port;  // in_cluster: KUBERNETES_SERVICE_HOST and _PORT
  // The variable that chose it ("KUBECONFIG", "HOME", "KUBERNETES_SERVICE_HOST"); empty when
  // scaler.kubeconfig did.
  std::string from;
};

struct Scaler {
  std::string type = "static";  // kubernetes | process | static
  // kubernetes
  std::string namespace_;  // YAML key `namespace`; default: the proxy's own namespace
  std::string deployment;
  // The Service whose EndpointSlices list the pods (YAML key `service`); empty: the first label of
  // an upstream host `<service>.<namespace>.svc...` in `namespace` (k8s::service_of_host), else
  // none is watched.
  std::string service;
  // A fixed count of pods while awake; unset: 1, or the autoscaled count below.
  std::optional<int> replicas;
  // Pods from load (docs/scaling.md): set target_in_flight (requests in flight plus held per
  // pod) to scale between min_replicas and max_replicas while awake; 0 stays the idle stop's.
  std::optional<double> target_in_flight;
  std::optional<int> min_replicas;  // default 1
  std::optional<int> max_replicas;  // default 1
  Duration stable_window = std::chrono::seconds(60);
  Duration panic_window = std::chrono::seconds(6);
  std::string kubeconfig;
  ClusterSource cluster;  // filled by the loader, not a YAML key
  // process
  std::vector<std::string> command;
  std::map<std::string, std::string> env;
  Duration stop_timeout = std::chrono::seconds(30);
};

struct Backend {
  std::string name;
  std::vector<std::string> models;
  bool default_ = false;  // YAML key `default`
  std::string upstream;   // http://host:port (required)
  Duration idle_timeout = std::chrono::minutes(5);
  Duration wake_timeout = std::chrono::minutes(2);
  // How long the upstream may send nothing, before its response head or between two reads of
  // its body: then 504, or a stream that ends. Long: a non-streaming completion sends its head
  // only when the whole answer is done.
  Duration upstream_timeout = std::chrono::minutes(10);
  std::size_t max_pending = 1000;
  // Which pod takes a request once the pods are known (docs/routing.md): least_outstanding, or
  // prefix (consistent hashing with bounded loads on the first routing_prefix_bytes of the
  // prompt).
  std::string routing = "least_outstanding";
  std::size_t routing_prefix_bytes = 1024;
  // Set on every request forwarded to this backend, replacing the client's field of the same name
  // (case-blind): e.g. vLLM's own key as Authorization, so clients never hold it.
  std::map<std::string, std::string> upstream_headers;
  Health health;
  Scaler scaler;
};

// Several proxy replicas in front of the same backends (docs/high-availability.md).
struct Coordination {
  std::string type = "none";  // none | kubernetes
  std::string identity;       // unique per replica; default: the hostname
  std::string lease_name = "vllm-autoscaler";
  std::string namespace_;  // YAML key `namespace`; default: the proxy's own namespace
  Duration lease_duration = std::chrono::seconds(15);
  Duration heartbeat_interval = std::chrono::seconds(2);
  std::string kubeconfig;
  ClusterSource cluster;  // filled by the loader, not a YAML key
};

struct Config {
  std::string listen = "0.0.0.0:8080";
  std::string admin_listen = "0.0.0.0:8081";
  int threads = 1;
  Log log;
  Auth auth;
  Limits limits;
  Coordination coordination;
  std::vector<Backend> backends;
};

}  // namespace va::config
