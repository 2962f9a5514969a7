#pragma once
// The pods behind one Service, from its EndpointSlices (README.md, "Configuration":
// scaler.service): what requests will be sent to, pod by pod, instead of through the Service.
//
// start() asks the API server which discovery.k8s.io version it serves (GET /apis/discovery.k8s.io:
// v1 from Kubernetes 1.21, else v1beta1, the only one of 1.20), then lists and watches the slices
// labelled kubernetes.io/service-name=<service> in the namespace with a k8s::Reflector. A 404 of
// the list or watch (the version went away in an upgrade) asks again. Nothing here is fatal: no
// permission, no such Service or an API that is down are a problem() and available() false, the
// caller keeps sending requests through the Service's URL, and the watch goes on trying (with
// backoff), so that a Role mended later is picked up without a restart.
//
// Threading: start(), shutdown() and the change callback run on the executor given to the
// constructor; usable(), endpoints(), available(), problem(), api() and status() may be called
// from any thread (under a mutex).
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "core/errors.hpp"
#include "core/net.hpp"
#include "k8s/client.hpp"
#include "k8s/config.hpp"
#include "k8s/reflector.hpp"

namespace va::k8s {

// One endpoint of a slice: an address with the port chosen from its slice.
struct Endpoint {
  std::string address;       // "10.0.0.7", "fd00::7": the first of the endpoint's addresses
  std::uint16_t port = 0;    // from the slice's ports (select_port())
  std::string pod;           // targetRef.name ("" when the endpoint is not a pod)
  bool ready = true;         // conditions.ready; absent means ready
  bool terminating = false;  // conditions.terminating == true (v1; 1.20 drops such endpoints)

  // A terminating endpoint never gets a new request, ready or not.
  bool usable() const { return ready && !terminating; }
  // "10.0.0.7:8000", "[fd00::7]:8000".
  std::string host_port() const;
  bool operator==(const Endpoint&) const = default;
};

// The endpoints of `slices` (EndpointSlice objects of discovery.k8s.io v1 or v1beta1, which agree
// on every field read here), sorted by address then port, so that every proxy replica sees the
// same order. IPv4 and IPv6 slices only (an FQDN slice names no pod address). An endpoint listed
// by several slices (a moment during the controller's rewrite) is one: terminating if any says
// so, ready if any says so. A slice without a usable port contributes nothing.
std::vector<Endpoint> endpoints_of(const std::map<std::string, boost::json::object>& slices,
                                   std::string_view port_name);

// The port of a slice's `ports` (TCP, or no protocol: TCP is the default): the only one; else
// the one named `port_name` when given and present; else the first. nullopt when there is none
// with a number.
std::optional<std::uint16_t> select_port(const boost::json::array* ports,
                                         std::string_view port_name);

// The API version to watch from an APIGroup (the answer of GET /apis/discovery.k8s.io):
// "discovery.k8s.io/v1" when served, else "discovery.k8s.io/v1beta1", else "".
std::string endpoint_slice_version(const boost::json::object& api_group);

// The Service an upstream host names, when it is a Service's cluster DNS name in `namespace_`:
// "vllm" for "vllm.llm.svc" and "vllm.llm.svc.cluster.local" in "llm"; "" for anything else (a
// short name, an address, another namespace).
std::string service_of_host(std::string_view host, std::string_view namespace_);

class EndpointSlices {
 public:
  struct Settings {
    std::string backend;  // for log lines
    std::string namespace_;
    std::string service;
    // In a slice with several ports, the one of this name (the Service port's name); else the
    // first.
    std::string port_name{};
    ClusterConfig cluster;
    Client::Settings client{.connect_timeout = std::chrono::seconds(3),
                            .request_timeout = std::chrono::seconds(5)};
    // The watch (k8s/reflector.hpp); its backoff_max bounds the API discovery's retries too.
    WatchTiming watch = {};
    // How often to ask again when the API server serves no EndpointSlices at all.
    std::chrono::milliseconds unserved_interval = std::chrono::seconds(60);
  };

  // Throws ConfigError if the cluster's CA or client certificate is not usable (as k8s::Client).
  EndpointSlices(Settings settings, Executor ex);
  ~EndpointSlices();
  EndpointSlices(const EndpointSlices&) = delete;
  EndpointSlices& operator=(const EndpointSlices&) = delete;

  // `f` is called on the executor after every change of endpoints(), available() or problem().
  // Before start().
  void on_change(std::function<void()> f) { on_change_ = std::move(f); }
  void start();
  // Ends the watch; returns once nothing of it runs any more.
  task<void> shutdown();

  // The endpoints that may get a request: ready and not terminating, in endpoints()' order.
  // Meaningful while available(); empty when the list was refused.
  std::vector<Endpoint> usable() const;
  // Every endpoint, as last seen (for /status).
  std::vector<Endpoint> endpoints() const;
  // Listed, with permission, and the Service has slices: the caller may route by usable().
  // False before the first list, when the list or watch is refused (401, 403, 404), and while
  // the Service has no EndpointSlice; stays true while the API is merely unreachable (the last
  // known endpoints stand, as an informer's cache does).
  bool available() const;
  // Why not available, or what fails now, in one sentence ("" when all is well):
  // `cannot list discovery.k8s.io/endpointslices in namespace "llm"`.
  std::string problem() const;
  // "discovery.k8s.io/v1" or "discovery.k8s.io/v1beta1"; "" until decided.
  std::string api() const;
  const std::string& service() const { return settings_.service; }
  // /status: {"service", "api", "available", "problem", "pods": [{"pod", "address"
  // ("10.0.0.7:8000"), "ready", "terminating"}, ...]} (every endpoint, in endpoints()' order).
  boost::json::object status() const;

 private:
  task<void> run();
  // The version to watch ("" when none is served), or a Failure when the API did not answer.
  task<outcome<std::string>> discover();
  task<void> pause(std::chrono::milliseconds d);
  // From the reflector's state: the endpoints, available, problem; notifies on a change.
  void update();
  void publish(std::vector<Endpoint> endpoints, bool available, std::string problem);

  Settings settings_;
  Executor ex_;
  Client client_;
  std::function<void()> on_change_;
  std::optional<Reflector> reflector_;  // for the version decided last
  std::string version_;                 // on the executor: the reflector's
  bool started_ = false;
  bool stopping_ = false;
  bool running_ = false;
  Timer stop_;  // expires at min() on shutdown: every pause() ends at once
  Timer idle_;  // expires at min() when run() has ended
  std::mt19937 rng_;

  mutable std::mutex mu_;  // guards what the other threads read
  std::vector<Endpoint> endpoints_;
  bool available_ = false;
  std::string problem_;
  std::string api_;
};

}  // namespace va::k8s
