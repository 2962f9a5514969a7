#include "app/app.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <thread>

#include "activator/backend.hpp"
#include "admin/admin.hpp"
#include "config/kubeconfig.hpp"
#include "config/loader.hpp"
#include "coord/coordinator.hpp"
#include "coord/kubernetes_lease_store.hpp"
#include "core/duration.hpp"
#include "core/log.hpp"
#include "core/spawn.hpp"
#include "http/listener.hpp"
#include "http/session.hpp"
#include "k8s/endpoint_slices.hpp"
#include "metrics/metrics.hpp"
#include "scaler/scaler.hpp"
#include "upstream/pool.hpp"

namespace va::app {
namespace {
std::atomic<bool> g_run_returned{false};

// scaler.target_in_flight set: the pods follow the load while the backend is awake.
std::optional<activity::DesiredReplicas::Settings> autoscale(const config::Scaler& s) {
  if (!s.target_in_flight) {
    return std::nullopt;
  }
  return activity::DesiredReplicas::Settings{.min_replicas = s.min_replicas.value_or(1),
                                             .max_replicas = s.max_replicas.value_or(1),
                                             .target_in_flight = *s.target_in_flight,
                                             .stable_window = s.stable_window,
                                             .panic_window = s.panic_window,
                                             .scale_down_every = s.stable_window};
}

// The pods a backend routes to: the usable endpoints of its Service, once they are known.
std::vector<routing::PodAddress> pod_addresses(const k8s::EndpointSlices& w) {
  std::vector<routing::PodAddress> out;
  if (!w.available()) {
    return out;
  }
  for (const auto& e : w.usable()) {
    out.push_back({.pod = e.pod, .host = e.address, .port = std::to_string(e.port)});
  }
  return out;
}

}  // namespace

struct App::Impl {
  explicit Impl(config::Config c)
      : cfg(std::move(c)),
        budget(cfg.limits.max_pending_bytes),
        admin{.metrics = metrics, .backends = {}, .coordination = {}, .coordination_problems = {}} {
  }

  config::Config cfg;
  // One io_context per I/O thread, each run by that thread alone (core/net.hpp); the hint lets
  // Asio skip locking. The first also runs the accept loops, the backends' controllers and the
  // shutdown. The others are kept running by `keep` until the shutdown ends.
  std::vector<std::unique_ptr<net::io_context>> contexts = [n = cfg.threads] {
    std::vector<std::unique_ptr<net::io_context>> v;
    for (int i = 0; i < n; ++i) {
      v.push_back(std::make_unique<net::io_context>(1));
    }
    return v;
  }();
  net::io_context& ioc = *contexts.front();
  std::vector<Executor> workers;
  std::vector<net::executor_work_guard<Executor>> keep;
  metrics::Metrics metrics;
  activator::PendingBudget budget;
  std::vector<std::unique_ptr<upstream::Pool>> pools;
  std::vector<std::unique_ptr<activator::Backend>> backends;
  // The pods behind the backends' Services (shared with their Backend), in backends' order.
  std::vector<std::shared_ptr<k8s::EndpointSlices>> endpoint_watches;
  std::unique_ptr<coord::Coordinator> coordinator;  // several proxy replicas
  std::unique_ptr<front::Router> router;
  std::unique_ptr<front::Frontend> frontend;
  admin::Admin admin;
  std::optional<Acceptor> public_acceptor;
  std::optional<Acceptor> admin_acceptor;
  std::optional<net::signal_set> signals;

  void build();
  std::shared_ptr<k8s::EndpointSlices> watch_endpoints(const config::Backend& b,
                                                       const std::string& upstream_host);
  void coordinate();
  void listen();
  task<void> shutdown();
};

void App::Impl::build() {
  std::vector<front::Router::Entry> entries;
  for (const auto& b : cfg.backends) {
    const auto up = config::parse_upstream(b.upstream);
    VA_CHECK(up.has_value());  // validated by the loader
    const bool v6 = up->host.find(':') != std::string::npos;
    upstream::Target target{
        .host = up->host,
        .port = std::to_string(up->port),
        .host_header = (v6 ? "[" + up->host + "]" : up->host) + ":" + std::to_string(up->port),
        .headers = {b.upstream_headers.begin(), b.upstream_headers.end()}};
    pools.push_back(std::make_unique<upstream::Pool>(
        upstream::Pool::Settings{.target = target, .upstream_timeout = b.upstream_timeout}));
    auto backend = std::make_unique<activator::Backend>(
        activator::Backend::Settings{.name = b.name,
                                     .idle_timeout = b.idle_timeout,
                                     .wake_timeout = b.wake_timeout,
                                     .max_pending = b.max_pending,
                                     .health = b.health,
                                     .replicas = b.scaler.replicas.value_or(1),
                                     .autoscale = autoscale(b.scaler),
                                     .routing = b.routing == "prefix"
                                                    ? routing::Policy::prefix
                                                    : routing::Policy::least_outstanding,
                                     .prefix_bytes = b.routing_prefix_bytes,
                                     .learn_models = cfg.backends.size() == 1 && b.models.empty()},
        ioc.get_executor(), [&b](Executor ex) { return scaler::make_scaler(b, std::move(ex)); },
        *pools.back(), metrics, budget);
    if (auto watch = watch_endpoints(b, up->host)) {
      // Requests go to the pods the slices list as ready and not terminating; while none is known
      // (or the list is refused), through the upstream URL. Called on the watch's executor, never
      // after its shutdown(), which comes before the backends'.
      watch->on_change([w = watch.get(), to = backend.get()] { to->set_pods(pod_addresses(*w)); });
      backend->set_endpoints(watch);
      endpoint_watches.push_back(std::move(watch));
    }
    backends.push_back(std::move(backend));
    entries.push_back({backends.back().get(), b.models, b.default_});
    admin.backends.push_back(backends.back().get());
  }
  router = std::make_unique<front::Router>(std::move(entries));
  frontend.reset(new front::Frontend{
      .limits = cfg.limits, .api_keys = cfg.auth.keys, .router = *router, .metrics = metrics});
}

// A kubernetes backend whose Service is known (scaler.service, else the upstream's cluster DNS name
// `<service>.<namespace>.svc...`): the pods behind it, from its EndpointSlices.
std::shared_ptr<k8s::EndpointSlices> App::Impl::watch_endpoints(const config::Backend& b,
                                                                const std::string& upstream_host) {
  const auto& s = b.scaler;
  if (s.type != "kubernetes") {
    return nullptr;
  }
  std::string shown = "backends.";
  shown.append(b.name).append(".scaler");
  auto cluster = config::load_cluster(s.cluster, shown);
  const std::string ns = s.namespace_.empty() ? cluster.namespace_ : s.namespace_;
  const std::string service =
      s.service.empty() ? k8s::service_of_host(upstream_host, ns) : s.service;
  if (service.empty()) {
    log::info("pods not watched: the upstream names no Service of the namespace (scaler.service)",
              {{"backend", b.name}, {"upstream", b.upstream}, {"namespace", ns}});
    return nullptr;
  }
  return std::make_shared<k8s::EndpointSlices>(
      k8s::EndpointSlices::Settings{
          .backend = b.name, .namespace_ = ns, .service = service, .cluster = std::move(cluster)},
      ioc.get_executor());
}

// coordination.type kubernetes: scale-downs are agreed with the other replicas through Leases.
void App::Impl::coordinate() {
  const auto& k = cfg.coordination;
  if (k.type != "kubernetes") {
    return;
  }
  auto cluster = config::load_cluster(k.cluster, "coordination");
  const std::string ns = k.namespace_.empty() ? cluster.namespace_ : k.namespace_;
  // A call that hangs must not outlast the Lease it renews: a third of lease_duration each (5 s
  // with the default 15 s), so that a leader cut off from the API steps down before its Lease
  // expires under another replica.
  k8s::Client::Settings calls;
  calls.request_timeout = std::max<std::chrono::milliseconds>(k.lease_duration / 3, 1s);
  calls.connect_timeout = std::min(calls.connect_timeout, calls.request_timeout);
  auto client = std::make_unique<k8s::Client>(std::move(cluster), ioc.get_executor(), calls);
  std::vector<activator::Backend*> all;
  for (auto& b : backends) {
    all.push_back(b.get());
  }
  coordinator = std::make_unique<coord::Coordinator>(
      coord::Settings{.identity = k.identity,
                      .lease_name = k.lease_name,
                      .lease_duration = k.lease_duration,
                      .heartbeat_interval = k.heartbeat_interval},
      ioc.get_executor(),
      std::make_unique<coord::KubernetesLeaseStore>(std::move(client), ns, k.lease_name), all,
      metrics, steady_time());
  for (auto* b : all) {
    b->set_peers(coordinator.get());
  }
  admin.coordination = [c = coordinator.get()] { return c->status(); };
  admin.coordination_problems = [c = coordinator.get()] { return c->setup_problems(); };
  log::info("coordinating with other proxy replicas",
            {{"identity", k.identity}, {"namespace", ns}, {"lease", k.lease_name}});
}

void App::Impl::listen() {
  const auto pub = config::parse_endpoint(cfg.listen);
  const auto adm = config::parse_endpoint(cfg.admin_listen);
  VA_CHECK(pub && adm);
  public_acceptor.emplace(front::open_acceptor(ioc, pub->host, pub->port));
  admin_acceptor.emplace(front::open_acceptor(ioc, adm->host, adm->port));
  log::info("listening", {{"public", public_acceptor->local_endpoint().address().to_string() + ":" +
                                         std::to_string(public_acceptor->local_endpoint().port())},
                          {"admin", admin_acceptor->local_endpoint().address().to_string() + ":" +
                                        std::to_string(admin_acceptor->local_endpoint().port())},
                          {"public_port", public_acceptor->local_endpoint().port()},
                          {"admin_port", admin_acceptor->local_endpoint().port()}});
}

task<void> App::Impl::shutdown() {
  log::info("shutting down", {{"shutdown_timeout", format_duration(cfg.limits.shutdown_timeout)}});
  admin.ready = false;
  frontend->shutting_down = true;
  error_code ec;
  public_acceptor->close(ec);
  for (auto& b : backends) {
    b->begin_shutdown();
  }
  // Let in-flight requests (streams included) finish, up to shutdown_timeout.
  const auto deadline = Clock::now() + cfg.limits.shutdown_timeout;
  Timer t(ioc);
  for (;;) {
    std::size_t busy = frontend->requests_active;
    if (busy == 0 || Clock::now() >= deadline) {
      if (busy > 0) {
        log::warn("shutdown_timeout reached; cutting requests", {{"requests", busy}});
      }
      break;
    }
    t.expires_after(50ms);
    co_await t.async_wait(use_nothrow);
  }
  if (coordinator) {
    co_await coordinator->shutdown();  // first: a controller may wait on it for a verdict
  }
  for (auto& w : endpoint_watches) {
    co_await w->shutdown();
  }
  for (auto& b : backends) {
    co_await b->shutdown();
  }
  // End every connection, so that each session coroutine returns on its own, while everything it
  // refers to still exists; run() then returns once nothing is left to do.
  admin_acceptor->close(ec);
  signals->cancel(ec);
  frontend->connections.shutdown_all();
  admin.connections.shutdown_all();
  keep.clear();  // the other I/O threads return once their sessions have ended
  log::info("stopped", {});
  // Should anything still hold the loop (a bug), do not hang the pod's termination on it.
  std::thread([] {
    std::this_thread::sleep_for(5s);
    if (!g_run_returned) {
      log::error("event loop did not drain within 5 s after shutdown; exiting", {});
      std::_Exit(0);
    }
  }).detach();
}

App::App(config::Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}
App::~App() = default;

int App::run() {
  auto& s = *impl_;
  log::init(log::Level(spdlog::level::from_str(s.cfg.log.level)),
            s.cfg.log.format == "text" ? log::Format::text : log::Format::json);
  ::signal(SIGPIPE, SIG_IGN);
  // Every held or streaming request costs two descriptors: use all the hard limit allows.
  if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  s.build();
  s.coordinate();
  s.listen();

  s.signals.emplace(s.ioc, SIGTERM, SIGINT);
  bool stopping = false;
  s.signals->async_wait([&](const error_code& ec, int sig) {
    if (ec || stopping) {
      return;
    }
    stopping = true;
    log::info("signal received", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
    spawn(s.ioc.get_executor(), s.shutdown(), "shutdown");
  });

  // The accept loops and the shutdown share one thread: an acceptor is never closed while another
  // thread is inside its async_accept.
  auto public_handler = [&s](Socket sock) {
    return front::serve_public(std::move(sock), *s.frontend);
  };
  auto admin_handler = [&s](Socket sock) { return admin::serve_admin(std::move(sock), s.admin); };
  for (auto& c : s.contexts) {
    s.workers.push_back(c->get_executor());
  }
  for (std::size_t i = 1; i < s.contexts.size(); ++i) {
    s.keep.push_back(net::make_work_guard(*s.contexts[i]));
  }
  spawn(s.ioc.get_executor(),
        front::accept_loop(s.workers, *s.public_acceptor, public_handler, &s.frontend->connections,
                           s.cfg.limits.max_connections),
        "public accept");
  spawn(s.ioc.get_executor(),
        front::accept_loop(s.workers, *s.admin_acceptor, admin_handler, nullptr, 0),
        "admin accept");
  for (auto& b : s.backends) {
    b->start();
  }
  for (auto& w : s.endpoint_watches) {
    w->start();
  }
  if (s.coordinator) {
    s.coordinator->start();
  }
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < s.contexts.size(); ++i) {
    threads.emplace_back([&c = *s.contexts[i]] { c.run(); });
    // Named for ps and top (and test_threads.py): io-1, io-2, ...; the first is the main thread.
    // Named here, not by the thread itself, so the name is there before the main thread answers.
    ::pthread_setname_np(threads.back().native_handle(), ("io-" + std::to_string(i)).c_str());
  }
  s.admin.ready = true;
  s.ioc.run();
  for (auto& t : threads) {
    t.join();
  }
  g_run_returned = true;
  return 0;
}

}  // namespace va::app
