#include "k8s/endpoint_slices.hpp"

#include <algorithm>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/json.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>

#include "core/backoff.hpp"
#include "core/log.hpp"
#include "core/spawn.hpp"
#include "k8s/objects.hpp"

namespace va::k8s {
namespace {

namespace json = boost::json;
using namespace net::experimental::awaitable_operators;

constexpr std::string_view kGroup = "discovery.k8s.io";

// A bool field: nullopt when absent or not a bool.
std::optional<bool> flag(const json::object* o, std::string_view key) {
  const auto* v = o ? o->if_contains(key) : nullptr;
  if (v == nullptr || !v->is_bool()) {
    return std::nullopt;
  }
  return v->get_bool();
}

// Orders addresses as addresses (127.0.0.2 before 127.0.0.10), IPv4 before IPv6; anything that is
// not an address after them, as text.
bool address_less(const std::string& a, const std::string& b) {
  error_code ea, eb;
  const auto x = net::ip::make_address(a, ea);
  const auto y = net::ip::make_address(b, eb);
  if (!ea && !eb) {
    return x < y;
  }
  if (!ea != !eb) {
    return !ea;
  }
  return a < b;
}

std::string service_what(const EndpointSlices::Settings& s) {
  std::string out = "endpointslices of service ";
  out.append(s.namespace_).append("/").append(s.service);
  return out;
}

std::string not_listed_yet(const EndpointSlices::Settings& s) {
  std::string out = "the EndpointSlices of service \"";
  out.append(s.service).append("\" in namespace \"").append(s.namespace_);
  out.append("\" are not listed yet");
  return out;
}

}  // namespace

std::string Endpoint::host_port() const {
  std::string out;
  if (address.find(':') != std::string::npos) {
    out.append("[").append(address).append("]");
  } else {
    out.append(address);
  }
  out.append(":").append(std::to_string(port));
  return out;
}

std::optional<std::uint16_t> select_port(const json::array* ports, std::string_view port_name) {
  if (ports == nullptr) {
    return std::nullopt;
  }
  std::vector<const json::object*> tcp;
  for (const auto& p : *ports) {
    const auto* o = p.if_object();
    const auto protocol = text(o, "protocol");
    const auto number = k8s::number(o, "port");
    if (o != nullptr && (protocol.empty() || protocol == "TCP") && number > 0 && number <= 65535) {
      tcp.push_back(o);
    }
  }
  if (tcp.empty()) {
    return std::nullopt;
  }
  const json::object* chosen = tcp.front();
  if (tcp.size() > 1 && !port_name.empty()) {
    for (const auto* o : tcp) {
      if (text(o, "name") == port_name) {
        chosen = o;
        break;
      }
    }
  }
  return static_cast<std::uint16_t>(number(chosen, "port"));
}

std::vector<Endpoint> endpoints_of(const std::map<std::string, json::object>& slices,
                                   std::string_view port_name) {
  std::vector<Endpoint> out;
  for (const auto& [name, slice] : slices) {
    const auto type = text(&slice, "addressType");
    if (type != "IPv4" && type != "IPv6") {
      continue;
    }
    const auto port = select_port(list_of(&slice, "ports"), port_name);
    const auto* endpoints = list_of(&slice, "endpoints");
    if (!port || endpoints == nullptr) {
      continue;
    }
    for (const auto& ev : *endpoints) {
      const auto* e = ev.if_object();
      const auto* addresses = list_of(e, "addresses");
      if (addresses == nullptr || addresses->empty() || !addresses->front().is_string()) {
        continue;
      }
      const auto* conditions = child(e, "conditions");
      const auto* target = child(e, "targetRef");
      const auto kind = text(target, "kind");
      Endpoint ep{.address = std::string(addresses->front().get_string()),
                  .port = *port,
                  .pod = kind.empty() || kind == "Pod" ? text(target, "name") : std::string(),
                  .ready = flag(conditions, "ready").value_or(true),
                  .terminating = flag(conditions, "terminating").value_or(false)};
      auto same = std::find_if(out.begin(), out.end(), [&](const Endpoint& o) {
        return o.address == ep.address && o.port == ep.port;
      });
      if (same == out.end()) {
        out.push_back(std::move(ep));
        continue;
      }
      same->terminating = same->terminating || ep.terminating;
      same->ready = same->ready || ep.ready;
      if (same->pod.empty()) {
        same->pod = ep.pod;
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const Endpoint& a, const Endpoint& b) {
    if (a.address != b.address) {
      return address_less(a.address, b.address);
    }
    return a.port < b.port;
  });
  // A dual-stack pod is in an IPv4 slice and an IPv6 one: one endpoint (its first address, IPv4),
  // or it would count twice in the routing.
  std::vector<Endpoint> once;
  for (auto& e : out) {
    const bool seen = !e.pod.empty() && std::any_of(once.begin(), once.end(), [&](const auto& o) {
      return o.pod == e.pod && o.port == e.port;
    });
    if (!seen) {
      once.push_back(std::move(e));
    }
  }
  return once;
}

std::string endpoint_slice_version(const json::object& api_group) {
  bool v1 = false;
  bool v1beta1 = false;
  if (const auto* versions = list_of(&api_group, "versions")) {
    for (const auto& v : *versions) {
      const auto gv = text(v.if_object(), "groupVersion");
      v1 = v1 || gv == "discovery.k8s.io/v1";
      v1beta1 = v1beta1 || gv == "discovery.k8s.io/v1beta1";
    }
  }
  return v1 ? "discovery.k8s.io/v1" : v1beta1 ? "discovery.k8s.io/v1beta1" : "";
}

std::string service_of_host(std::string_view host, std::string_view namespace_) {
  if (host.ends_with('.')) {
    host.remove_suffix(1);
  }
  std::vector<std::string_view> labels;
  for (std::size_t start = 0;;) {
    const auto dot = host.find('.', start);
    labels.push_back(host.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) {
      break;
    }
    start = dot + 1;
  }
  if (labels.size() < 3 || labels[0].empty() || namespace_.empty() || labels[1] != namespace_ ||
      labels[2] != "svc") {
    return {};
  }
  return std::string(labels[0]);
}

// --- the watch ---------------------------------------------------------------------------------

EndpointSlices::EndpointSlices(Settings settings, Executor ex)
    : settings_(std::move(settings)),
      ex_(ex),
      client_(settings_.cluster, ex, settings_.client),
      stop_(ex, Clock::time_point::max()),
      idle_(ex, Clock::time_point::max()),
      rng_(std::random_device{}()),
      problem_(not_listed_yet(settings_)) {}

EndpointSlices::~EndpointSlices() = default;

void EndpointSlices::start() {
  if (started_ || stopping_) {
    return;
  }
  started_ = true;
  running_ = true;
  spawn(ex_, run(), "kubernetes endpointslice watch");
}

task<void> EndpointSlices::shutdown() {
  stopping_ = true;
  stop_.expires_at(Clock::time_point::min());  // ends every pause() and the discovery
  if (reflector_) {
    reflector_->stop();
  }
  if (running_) {
    co_await idle_.async_wait(use_nothrow);
  }
}

task<void> EndpointSlices::pause(std::chrono::milliseconds d) {
  Timer t(ex_, d);
  co_await (t.async_wait(use_nothrow_task) || stop_.async_wait(use_nothrow_task));
}

task<void> EndpointSlices::run() {
  const auto& backend = settings_.backend;
  const auto& service = settings_.service;
  int failures = 0;
  while (!stopping_) {
    auto version = co_await discover();
    if (stopping_) {
      break;
    }
    if (!version || version->empty()) {
      // Asked again: soon when the API did not answer, rarely when it serves no EndpointSlices
      // (only a cluster upgrade changes that).
      std::string problem =
          version ? "the API server serves no EndpointSlices (discovery.k8s.io v1 or v1beta1)"
                  : version.error().message;
      const auto wait =
          version ? settings_.unserved_interval
                  : jittered(backoff(++failures, 500ms, settings_.watch.backoff_max), rng_);
      log::warn("kubernetes: cannot watch the endpoints of the service",
                {{"backend", backend},
                 {"service", service},
                 {"problem", problem},
                 {"retry_in_ms", wait.count()}});
      publish({}, false, std::move(problem));
      co_await pause(wait);
      continue;
    }
    version_ = *version;
    {
      std::lock_guard lock(mu_);
      api_ = version_;
    }
    log::info("kubernetes: watching the endpoints of the service",
              {{"backend", backend},
               {"service", service},
               {"namespace", settings_.namespace_},
               {"api", version_}});
    std::string path = "/apis/" + version_ + "/namespaces/" + settings_.namespace_;
    path.append("/endpointslices");
    std::string query = "labelSelector=";
    query.append(boost::urls::encode("kubernetes.io/service-name=" + settings_.service,
                                     boost::urls::unreserved_chars));
    reflector_.emplace(Reflector::Settings{.what = service_what(settings_),
                                           .path = std::move(path),
                                           .query = std::move(query),
                                           .log_key = "backend",
                                           .log_value = settings_.backend,
                                           .timing = settings_.watch},
                       client_, ex_, Reflector::Callbacks{.changed = [this] { update(); }});
    co_await reflector_->run();
    if (stopping_) {
      break;
    }
    // update() stopped it on a 404: the version is no longer served. Ask which one is, with
    // backoff should the answer be the same again.
    failures = reflector_->synced() ? 1 : failures + 1;
    log::info("kubernetes: the EndpointSlice API answered 404; asking for its version again",
              {{"backend", backend}, {"service", service}, {"api", version_}});
    co_await pause(jittered(backoff(failures, 500ms, settings_.watch.backoff_max), rng_));
  }
  running_ = false;
  idle_.expires_at(Clock::time_point::min());
}

task<outcome<std::string>> EndpointSlices::discover() {
  const std::string target = "/apis/" + std::string(kGroup);
  auto got =
      co_await (client_.request(http::verb::get, target) || stop_.async_wait(use_nothrow_task));
  if (got.index() == 1) {
    co_return std::string();  // stopping
  }
  auto& r = std::get<0>(got);
  if (!r) {
    co_return r.error();
  }
  if (r->status == 404) {
    co_return std::string();
  }
  if (r->status != 200) {
    co_return api_failure(http::verb::get, target, *r);
  }
  error_code ec;
  const auto v = json::parse(r->body, ec);
  if (ec || !v.is_object()) {
    co_return Failure{errc::scaler_unavailable, "GET " + target + ": not an APIGroup"};
  }
  co_return endpoint_slice_version(v.get_object());
}

void EndpointSlices::update() {
  auto& r = *reflector_;
  const unsigned status = r.error().empty() ? 0 : r.error_status();
  if (status == 404) {
    r.stop();  // run() asks which version is served
  }
  const bool refused = status == 401 || status == 403 || status == 404;
  std::string problem;
  if (status == 403) {
    problem.append("cannot ").append(r.error_verb()).append(" ").append(kGroup);
    problem.append("/endpointslices in namespace \"").append(settings_.namespace_).append("\"");
  } else if (!r.error().empty()) {
    problem = r.error();
  } else if (!r.synced()) {
    problem = not_listed_yet(settings_);
  } else if (r.items().empty()) {
    problem.append("no EndpointSlice of service \"").append(settings_.service);
    problem.append("\" in namespace \"").append(settings_.namespace_);
    problem.append("\" (no such Service, or one without a selector)");
  }
  const bool available = r.synced() && !refused && !r.items().empty();
  publish(refused ? std::vector<Endpoint>{} : endpoints_of(r.items(), settings_.port_name),
          available, std::move(problem));
}

void EndpointSlices::publish(std::vector<Endpoint> endpoints, bool available, std::string problem) {
  bool problem_changed = false;
  bool endpoints_changed = false;
  {
    std::lock_guard lock(mu_);
    problem_changed = problem != problem_ || available != available_;
    endpoints_changed = endpoints != endpoints_;
    if (!problem_changed && !endpoints_changed) {
      return;
    }
    endpoints_ = endpoints;
    available_ = available;
    problem_ = problem;
  }
  if (problem_changed && problem.empty()) {
    log::info("kubernetes: the endpoints of the service are known",
              {{"backend", settings_.backend}, {"service", settings_.service}});
  } else if (problem_changed) {
    log::warn("kubernetes: the endpoints of the service are not usable",
              {{"backend", settings_.backend},
               {"service", settings_.service},
               {"available", available},
               {"problem", problem}});
  }
  if (endpoints_changed) {
    const auto usable = std::count_if(endpoints.begin(), endpoints.end(),
                                      [](const Endpoint& e) { return e.usable(); });
    log::info("kubernetes: endpoints", {{"backend", settings_.backend},
                                        {"service", settings_.service},
                                        {"endpoints", endpoints.size()},
                                        {"usable", usable}});
  }
  if (on_change_) {
    on_change_();
  }
}

std::vector<Endpoint> EndpointSlices::usable() const {
  std::lock_guard lock(mu_);
  std::vector<Endpoint> out;
  std::copy_if(endpoints_.begin(), endpoints_.end(), std::back_inserter(out),
               [](const Endpoint& e) { return e.usable(); });
  return out;
}

std::vector<Endpoint> EndpointSlices::endpoints() const {
  std::lock_guard lock(mu_);
  return endpoints_;
}

bool EndpointSlices::available() const {
  std::lock_guard lock(mu_);
  return available_;
}

std::string EndpointSlices::problem() const {
  std::lock_guard lock(mu_);
  return problem_;
}

std::string EndpointSlices::api() const {
  std::lock_guard lock(mu_);
  return api_;
}

json::object EndpointSlices::status() const {
  std::lock_guard lock(mu_);
  json::array pods;
  for (const auto& e : endpoints_) {
    pods.push_back(json::object{{"pod", e.pod},
                                {"address", e.host_port()},
                                {"ready", e.ready},
                                {"terminating", e.terminating}});
  }
  return {{"service", settings_.service},
          {"api", api_},
          {"available", available_},
          {"problem", problem_},
          {"pods", std::move(pods)}};
}

}  // namespace va::k8s
