#include "config/validate.hpp"

#include <algorithm>
#include <boost/url.hpp>
#include <cctype>
#include <charconv>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "config/loader.hpp"
#include "config/text.hpp"
#include "core/duration.hpp"
#include "wire/hop_by_hop.hpp"

namespace va::config {
namespace {

bool one_of(const std::string& value, std::initializer_list<std::string_view> allowed) {
  return std::find(allowed.begin(), allowed.end(), value) != allowed.end();
}

bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::optional<Endpoint> parse_upstream_why(std::string_view s, std::string& why) {
  // The scheme first: Boost.URL 1.81 fails an assertion on some other strings ("x:]", found by
  // fuzz/config; regression input fuzz/corpus/config/regression-url-rootless-bracket).
  if (s.starts_with("https://")) {
    why = "https upstreams are not supported yet; use http://";
    return std::nullopt;
  }
  if (!s.starts_with("http://")) {
    why = "must start with http://";
    return std::nullopt;
  }
  const auto r = boost::urls::parse_uri(s);
  if (!r) {
    why = "not a URL";
    return std::nullopt;
  }
  const boost::urls::url_view& u = *r;
  if (u.has_userinfo()) {
    why = "must not contain credentials";
    return std::nullopt;
  }
  if (u.host_type() == boost::urls::host_type::none || u.encoded_host().empty()) {
    why = "has no host";
    return std::nullopt;
  }
  if (u.host_type() == boost::urls::host_type::ipvfuture) {
    why = "unsupported host";
    return std::nullopt;
  }
  Endpoint e{.host = u.host_address(), .port = 80};
  if (u.has_port()) {
    const std::string_view port = u.port();
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || value == 0 ||
        value > 65535) {
      why = "bad port";
      return std::nullopt;
    }
    e.port = static_cast<unsigned short>(value);
  }
  if (!u.encoded_path().empty() && u.encoded_path() != "/") {
    why = "must not have a path (requests keep their own path)";
    return std::nullopt;
  }
  if (u.has_query() || u.has_fragment()) {
    why = "must not have a query or fragment";
    return std::nullopt;
  }
  return e;
}

void validate_endpoint(const std::string& key, const std::string& value, const Origins& origins,
                       Problems& problems) {
  if (!parse_endpoint(value)) {
    problems.check(key, origins.shown(key),
                   "bad address " + in_quotes(value) +
                       " (use host:port, [::1]:port for IPv6; port 0 to 65535)");
  }
}

void validate_positive(const std::string& path, Duration d, const Origins& origins,
                       Problems& problems) {
  if (d <= Duration::zero()) {
    problems.check(path, origins.shown(path), "must be greater than 0");
  }
}

// How many pods a kubernetes backend has while awake: a fixed `replicas`, or from load between
// min_replicas and max_replicas (target_in_flight set).
void validate_pods(const std::string& path, const Scaler& s, const Origins& origins,
                   Problems& problems) {
  const auto check = [&](const std::string& key, std::string_view message) {
    const std::string p = path + "." + key;
    problems.check(p, origins.shown(p), message);
  };
  if (s.replicas && *s.replicas < 1) {
    check("replicas", "must be at least 1");
  }
  if (!s.target_in_flight) {
    for (const auto& [key, value] :
         {std::pair<std::string, std::optional<int>>{"min_replicas", s.min_replicas},
          {"max_replicas", s.max_replicas}}) {
      if (value && *value != 1) {
        check(key,
              "scaling from load needs scaler.target_in_flight (requests per pod); for a "
              "fixed count use scaler.replicas");
      }
    }
    return;
  }
  if (!(*s.target_in_flight > 0)) {
    check("target_in_flight", "must be above 0 (requests in flight per pod)");
  }
  if (s.replicas) {
    check("replicas", "a fixed count: with target_in_flight use min_replicas and max_replicas");
  }
  const int min = s.min_replicas.value_or(1), max = s.max_replicas.value_or(1);
  if (min < 1) {
    check("min_replicas", "must be at least 1 (0 is the idle stop's: idle_timeout)");
  } else if (max < min) {
    check("max_replicas", "must be at least min_replicas (" + std::to_string(min) + ")");
  }
  validate_positive(path + ".panic_window", s.panic_window, origins, problems);
  if (s.stable_window < s.panic_window) {
    check("stable_window",
          "must be at least panic_window (" + format_duration(s.panic_window) + ")");
  }
}

// A DNS-1123 label: what a Lease's name is made of.
bool dns_label(std::string_view s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') {
    return false;
  }
  return std::all_of(s.begin(), s.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-';
  });
}

void validate_scaler(const std::string& path, const Scaler& s, const Origins& origins,
                     Problems& problems) {
  const auto check = [&](const std::string& key, std::string_view message) {
    const std::string p = path + "." + key;
    problems.check(p, origins.shown(p), message);
  };
  if (!one_of(s.type, {"kubernetes", "process", "static"})) {
    check("type", "must be one of kubernetes, process, static (got " + in_quotes(s.type) + ")");
    return;
  }
  if (s.type == "kubernetes") {
    if (s.deployment.empty()) {
      check("deployment", "required for the kubernetes scaler");
    }
    validate_pods(path, s, origins, problems);
    // A Service's name is a DNS-1035 label: a letter first.
    if (!s.service.empty() && (!dns_label(s.service) || s.service.front() < 'a')) {
      check("service",
            "must be a Service's name (lowercase letters, digits and '-', a letter "
            "first, at most 63; got " +
                in_quotes(s.service) + ")");
    }
  } else {
    for (const auto& [key, set] : {std::pair<std::string, bool>{"namespace", !s.namespace_.empty()},
                                   {"deployment", !s.deployment.empty()},
                                   {"service", !s.service.empty()},
                                   {"kubeconfig", !s.kubeconfig.empty()},
                                   {"replicas", s.replicas.has_value()},
                                   {"target_in_flight", s.target_in_flight.has_value()},
                                   {"min_replicas", s.min_replicas.has_value()},
                                   {"max_replicas", s.max_replicas.has_value()}}) {
      if (set) {
        check(key, "only used by the kubernetes scaler (type is " + s.type + ")");
      }
    }
  }
  if (s.type == "process") {
    if (s.command.empty() || s.command.front().empty()) {
      check("command", "required for the process scaler");
    }
    validate_positive(path + ".stop_timeout", s.stop_timeout, origins, problems);
    for (const auto& [name, value] : s.env) {
      if (name.empty() || name.find('=') != std::string::npos) {
        check("env." + name, "bad variable name " + in_quotes(name));
      }
    }
  } else {
    if (!s.command.empty()) {
      check("command", "only used by the process scaler (type is " + s.type + ")");
    }
    if (!s.env.empty()) {
      check("env", "only used by the process scaler (type is " + s.type + ")");
    }
  }
}

void validate_backend(const std::string& path, const Backend& b, const Origins& origins,
                      Problems& problems) {
  const auto check = [&](const std::string& key, std::string_view message) {
    const std::string p = path + "." + key;
    problems.check(p, origins.shown(p), message);
  };
  if (!b.name.empty() && !std::all_of(b.name.begin(), b.name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-';
      })) {
    check("name", in_quotes(b.name) + " may use only letters, digits, '.', '_' and '-'");
  }
  if (b.upstream.empty()) {
    check("upstream", "required");
  } else if (std::string why; !parse_upstream_why(b.upstream, why)) {
    check("upstream", "bad URL " + in_quotes(b.upstream) + ": " + why);
  }
  if (!one_of(b.routing, {"least_outstanding", "prefix"})) {
    check("routing", "must be one of least_outstanding, prefix (got " + in_quotes(b.routing) + ")");
  }
  if (b.routing_prefix_bytes == 0) {
    check("routing_prefix_bytes", "must be at least 1");
  }
  validate_positive(path + ".idle_timeout", b.idle_timeout, origins, problems);
  validate_positive(path + ".wake_timeout", b.wake_timeout, origins, problems);
  validate_positive(path + ".upstream_timeout", b.upstream_timeout, origins, problems);
  validate_positive(path + ".health.interval", b.health.interval, origins, problems);
  if (b.health.path.empty() || b.health.path.front() != '/') {
    check("health.path", "must start with '/' (got " + in_quotes(b.health.path) + ")");
  }
  const auto check_headers = [&](const std::string& key,
                                 const std::map<std::string, std::string>& headers) {
    for (const auto& [name, value] : headers) {
      if (name.empty() || !std::all_of(name.begin(), name.end(), is_token_char)) {
        check(key + "." + name, "bad header name " + in_quotes(name));
      } else if (value.find_first_of("\r\n") != std::string::npos ||
                 value.find('\0') != std::string::npos) {
        check(key + "." + name, "header values must not contain line breaks");
      }
    }
  };
  check_headers("health.headers", b.health.headers);
  check_headers("upstream_headers", b.upstream_headers);
  for (const auto& [name, value] : b.upstream_headers) {
    // The connection's own fields, the framing, and what the proxy writes itself.
    const std::string lowered = lower(name);
    bool own = wire::is_hop_by_hop(http::string_to_field(name));
    for (std::string_view f :
         {"host", "content-length", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"}) {
      own = own || lowered == f;
    }
    if (own) {
      check("upstream_headers." + name, "is written by the proxy itself and cannot be set");
    }
  }
  validate_scaler(path + ".scaler", b.scaler, origins, problems);
}

void validate_top_level(const Config& c, const Origins& origins, Problems& problems) {
  const auto check = [&](const std::string& path, std::string_view message) {
    problems.check(path, origins.shown(path), message);
  };
  validate_endpoint("listen", c.listen, origins, problems);
  validate_endpoint("admin_listen", c.admin_listen, origins, problems);
  if (const auto a = parse_endpoint(c.listen), b = parse_endpoint(c.admin_listen);
      a && b && a->port != 0 && a->port == b->port && a->host == b->host) {
    check("admin_listen", "same address as listen");
  }
  if (c.threads < 1 || c.threads > 64) {
    check("threads", "must be between 1 and 64");
  }
  if (!one_of(c.log.level, {"trace", "debug", "info", "warn", "error"})) {
    check("log.level",
          "must be one of trace, debug, info, warn, error (got " + in_quotes(c.log.level) + ")");
  }
  if (!one_of(c.log.format, {"json", "text"})) {
    check("log.format", "must be one of json, text (got " + in_quotes(c.log.format) + ")");
  }
  const Limits& l = c.limits;
  for (const auto& [key, value] :
       {std::pair<std::string, std::size_t>{"max_header_bytes", l.max_header_bytes},
        {"max_body_bytes", l.max_body_bytes},
        {"max_pending_bytes", l.max_pending_bytes},
        {"max_connections", l.max_connections}}) {
    if (value == 0) {
      check("limits." + key, "must be greater than 0");
    }
  }
  validate_positive("limits.header_timeout", l.header_timeout, origins, problems);
  validate_positive("limits.keepalive_timeout", l.keepalive_timeout, origins, problems);
  validate_positive("limits.send_timeout", l.send_timeout, origins, problems);
}

// Unique names and models, at most one default, and each backend reachable; then each backend.
void validate_backends(const std::vector<Backend>& backends, const Origins& origins,
                       Problems& problems) {
  const auto check = [&](const std::string& path, std::string_view message) {
    problems.check(path, origins.shown(path), message);
  };
  std::map<std::string, std::size_t> names;
  std::map<std::string, std::size_t> models;
  std::optional<std::size_t> default_backend;
  for (std::size_t i = 0; i < backends.size(); ++i) {
    const Backend& b = backends[i];
    const std::string path = element("backends", i);
    const std::string described = in_quotes(b.name) + " (" + path + ")";
    if (b.name.empty()) {
      check(path + ".name", "required");
    } else if (const auto [it, added] = names.emplace(b.name, i); !added) {
      check(path + ".name", "duplicate name " + in_quotes(b.name) + " (also backends[" +
                                std::to_string(it->second) + "])");
    }
    for (std::size_t m = 0; m < b.models.size(); ++m) {
      const std::string model_path = element(path + ".models", m);
      const std::string& model = b.models[m];
      if (model.empty()) {
        check(model_path, "empty model name");
      } else if (const auto [it, added] = models.emplace(model, i); !added) {
        const Backend& other = backends[it->second];
        check(model_path, it->second == i
                              ? "model " + in_quotes(model) + " is listed twice"
                              : "model " + in_quotes(model) + " is served by both backend " +
                                    described + " and backend " + in_quotes(other.name) +
                                    " (backends[" + std::to_string(it->second) + "])");
      }
    }
    if (b.default_) {
      if (default_backend) {
        check(path + ".default", "only one backend may be the default; backend " +
                                     in_quotes(backends[*default_backend].name) + " (backends[" +
                                     std::to_string(*default_backend) + "]) already is");
      } else {
        default_backend = i;
      }
    }
    if (b.models.empty() && !b.default_) {
      check(path + ".models", "backend " + described +
                                  " has no models and is not the default, so no request can "
                                  "reach it");
    }
    validate_backend(path, b, origins, problems);
  }
}

}  // namespace

void validate_coordination(const Config& c, const Origins& origins, Problems& problems) {
  const Coordination& k = c.coordination;
  const auto check = [&](const std::string& path, std::string_view message) {
    problems.check(path, origins.shown(path), message);
  };
  if (!one_of(k.type, {"none", "kubernetes"})) {
    check("coordination.type", "must be one of none, kubernetes (got " + in_quotes(k.type) + ")");
  }
  if (k.type != "kubernetes") {
    return;
  }
  if (!dns_label(k.identity)) {
    check("coordination.identity",
          "must be a DNS label (lowercase letters, digits and '-', at "
          "most 63), unique per replica: the pod's name (got " +
              in_quotes(k.identity) + ")");
  }
  if (!dns_label(k.lease_name) || k.lease_name.size() + 1 + k.identity.size() > 253) {
    check("coordination.lease_name",
          "must be a DNS label; with \"-<identity>\" it names each replica's Lease (got " +
              in_quotes(k.lease_name) + ")");
  }
  validate_positive("coordination.heartbeat_interval", k.heartbeat_interval, origins, problems);
  if (k.lease_duration < 3 * k.heartbeat_interval || k.lease_duration < std::chrono::seconds(3)) {
    check("coordination.lease_duration",
          "must be at least 3 s and 3 heartbeat_intervals (a replica that misses one heartbeat "
          "must not be taken for dead)");
  }
  for (std::size_t i = 0; i < c.backends.size(); ++i) {
    if (c.backends[i].scaler.type == "process") {
      check(element("backends", i) + ".scaler.type",
            "the process scaler runs the backend beside one proxy: it cannot be combined with "
            "coordination (several proxy replicas)");
    }
  }
}

void validate(Config& c, const Origins& origins, Problems& problems) {
  validate_top_level(c, origins, problems);
  validate_coordination(c, origins, problems);
  if (c.backends.empty()) {
    problems.check("backends", origins.shown("backends"), "at least one backend is required");
    return;
  }
  if (c.backends.size() == 1 && c.backends.front().name.empty()) {
    c.backends.front().name = "default";
  }
  validate_backends(c.backends, origins, problems);
}

std::optional<Endpoint> parse_endpoint(std::string_view s) {
  std::string_view host;
  std::string_view port;
  if (!s.empty() && s.front() == '[') {
    const std::size_t close = s.find(']');
    if (close == std::string_view::npos || s.substr(close + 1, 1) != ":") {
      return std::nullopt;
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
    if (!boost::urls::parse_ipv6_address(host)) {
      return std::nullopt;
    }
  } else {
    const std::size_t colon = s.rfind(':');
    if (colon == std::string_view::npos) {
      return std::nullopt;
    }
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    const auto host_char = [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '-' || c == '_';
    };
    if (host.empty() || !std::all_of(host.begin(), host.end(), host_char)) {
      return std::nullopt;  // also rejects an unbracketed IPv6 address
    }
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  unsigned value = 0;
  std::from_chars(port.data(), port.data() + port.size(), value);
  if (value > 65535) {
    return std::nullopt;
  }
  return Endpoint{.host = std::string(host), .port = static_cast<unsigned short>(value)};
}

std::optional<Endpoint> parse_upstream(std::string_view s) {
  std::string why;
  return parse_upstream_why(s, why);
}

}  // namespace va::config
