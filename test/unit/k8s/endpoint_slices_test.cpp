// EndpointSlices: what a slice says about its endpoints (v1 and v1beta1 shapes, ready and
// terminating, the port, the order), which API version is watched, which Service an upstream host
// names; and the watch itself against the in-process HTTPS server: discovery, a refused list, a
// group not served, a watch event that takes a pod out.
#include "k8s/endpoint_slices.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "unit/k8s/tls_server.hpp"

namespace va::k8s {
namespace {

namespace json = boost::json;

using testing::reply;
using testing::Reply;
using testing::Request;
using testing::TlsServer;

std::map<std::string, json::object> slices(std::initializer_list<std::string_view> texts) {
  std::map<std::string, json::object> out;
  for (auto t : texts) {
    auto o = json::parse(t).as_object();
    out[std::string(o.at("metadata").at("name").as_string())] = o;
  }
  return out;
}

// As Kubernetes 1.20 serves it: discovery.k8s.io/v1beta1, `topology`, no terminating condition
// (a terminating pod leaves the slice).
constexpr std::string_view kV1beta1 = R"({
  "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1beta1",
  "metadata": {"name": "vllm-abcde", "namespace": "llm",
               "labels": {"kubernetes.io/service-name": "vllm"}},
  "addressType": "IPv4",
  "endpoints": [
    {"addresses": ["127.0.0.3"], "conditions": {"ready": true}, "hostname": "x",
     "targetRef": {"kind": "Pod", "namespace": "llm", "name": "vllm-b"},
     "topology": {"kubernetes.io/hostname": "test-node"}},
    {"addresses": ["127.0.0.2"], "conditions": {"ready": false},
     "targetRef": {"kind": "Pod", "namespace": "llm", "name": "vllm-a"}}
  ],
  "ports": [{"name": "http", "protocol": "TCP", "port": 8000}]
})";

// As 1.21+ serves it: discovery.k8s.io/v1, nodeName, the serving and terminating conditions.
constexpr std::string_view kV1 = R"({
  "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
  "metadata": {"name": "vllm-fghij", "namespace": "llm"},
  "addressType": "IPv4",
  "endpoints": [
    {"addresses": ["10.0.0.7"], "conditions": {"ready": true, "serving": true, "terminating": false},
     "nodeName": "n1", "zone": "a", "targetRef": {"kind": "Pod", "name": "vllm-c"}},
    {"addresses": ["10.0.0.10", "10.0.0.11"],
     "conditions": {"ready": false, "serving": true, "terminating": true},
     "targetRef": {"kind": "Pod", "name": "vllm-d"}},
    {"addresses": ["10.0.0.8"], "conditions": {}, "targetRef": {"kind": "Pod", "name": "vllm-e"}}
  ],
  "ports": [{"name": "http", "protocol": "TCP", "port": 8000}]
})";

TEST(EndpointSlicesOf, V1beta1EndpointsWithTheirPodReadinessAndPortInAddressOrder) {
  const auto eps = endpoints_of(slices({kV1beta1}), "");
  ASSERT_EQ(eps.size(), 2u);
  EXPECT_EQ(eps[0], (Endpoint{.address = "127.0.0.2",
                              .port = 8000,
                              .pod = "vllm-a",
                              .ready = false,
                              .terminating = false}));
  EXPECT_EQ(eps[1], (Endpoint{.address = "127.0.0.3",
                              .port = 8000,
                              .pod = "vllm-b",
                              .ready = true,
                              .terminating = false}));
  EXPECT_FALSE(eps[0].usable());
  EXPECT_TRUE(eps[1].usable());
  EXPECT_EQ(eps[1].host_port(), "127.0.0.3:8000");
}

TEST(EndpointSlicesOf, V1TerminatingIsNeverUsableAndReadyAbsentIsReady) {
  const auto eps = endpoints_of(slices({kV1}), "");
  ASSERT_EQ(eps.size(), 3u);
  // As addresses, not as text: .7 and .8 before .10.
  EXPECT_EQ(eps[0].address, "10.0.0.7");
  EXPECT_TRUE(eps[0].usable());
  EXPECT_EQ(eps[1].address, "10.0.0.8");
  EXPECT_TRUE(eps[1].ready) << "conditions.ready absent reads as ready";
  EXPECT_TRUE(eps[1].usable());
  EXPECT_EQ(eps[2].address, "10.0.0.10");  // the first of its addresses
  EXPECT_EQ(eps[2].pod, "vllm-d");
  EXPECT_TRUE(eps[2].terminating);
  EXPECT_FALSE(eps[2].usable());
  // Ready and terminating (a pod draining with publishNotReadyAddresses, or serving while it
  // shuts down): still no new request.
  const auto draining = endpoints_of(slices({R"({"metadata":{"name":"s"},"addressType":"IPv4",
      "endpoints":[{"addresses":["10.0.0.9"],"conditions":{"ready":true,"terminating":true}}],
      "ports":[{"port":8000}]})"}),
                                     "");
  ASSERT_EQ(draining.size(), 1u);
  EXPECT_TRUE(draining[0].ready);
  EXPECT_FALSE(draining[0].usable());
  EXPECT_EQ(draining[0].pod, "");
}

TEST(EndpointSlicesOf, PortIsTheOnlyOneElseTheNamedOneElseTheFirst) {
  const auto ports = [](std::string_view text) {
    static json::value v;
    v = json::parse(text);
    return &v.as_array();
  };
  EXPECT_EQ(select_port(ports(R"([{"name":"metrics","port":9000}])"), "http"), 9000);
  EXPECT_EQ(
      select_port(ports(R"([{"name":"metrics","port":9000},{"name":"http","port":8000}])"), "http"),
      8000);
  EXPECT_EQ(
      select_port(ports(R"([{"name":"metrics","port":9000},{"name":"http","port":8000}])"), ""),
      9000);
  EXPECT_EQ(
      select_port(ports(R"([{"name":"metrics","port":9000},{"name":"http","port":8000}])"), "grpc"),
      9000);
  // UDP and SCTP ports are not ours; a port without a number means "all ports": none to dial.
  EXPECT_EQ(
      select_port(ports(R"([{"name":"dns","protocol":"UDP","port":53},{"port":8000}])"), "dns"),
      8000);
  EXPECT_EQ(select_port(ports(R"([{"name":"http"}])"), ""), std::nullopt);
  EXPECT_EQ(select_port(ports("[]"), ""), std::nullopt);
  EXPECT_EQ(select_port(nullptr, ""), std::nullopt);
  // A slice without a port to dial contributes no endpoint.
  EXPECT_TRUE(endpoints_of(slices({R"({"metadata":{"name":"s"},"addressType":"IPv4",
      "endpoints":[{"addresses":["10.0.0.9"]}],"ports":[]})"}),
                           "")
                  .empty());
}

TEST(EndpointSlicesOf, SeveralSlicesAreOneSortedListAndAnEndpointInTwoIsOne) {
  const auto eps =
      endpoints_of(slices({kV1,
                           R"({"metadata":{"name":"b"},"addressType":"IPv4","ports":[{"port":8001}],
                  "endpoints":[{"addresses":["10.0.0.7"]},{"addresses":["9.0.0.1"]}]})",
                           R"({"metadata":{"name":"c"},"addressType":"IPv6","ports":[{"port":8000}],
                  "endpoints":[{"addresses":["fd00::1"]}]})",
                           R"({"metadata":{"name":"d"},"addressType":"FQDN","ports":[{"port":8000}],
                  "endpoints":[{"addresses":["vllm.example.com"]}]})",
                           // The controller moving 10.0.0.8 between slices: here it is terminating.
                           R"({"metadata":{"name":"e"},"addressType":"IPv4","ports":[{"port":8000}],
                  "endpoints":[{"addresses":["10.0.0.8"],"conditions":{"terminating":true}}]})"}),
                   "");
  std::vector<std::string> order;
  for (const auto& e : eps) {
    order.push_back(e.host_port());
  }
  EXPECT_EQ(order, (std::vector<std::string>{"9.0.0.1:8001", "10.0.0.7:8000", "10.0.0.7:8001",
                                             "10.0.0.8:8000", "10.0.0.10:8000", "[fd00::1]:8000"}));
  EXPECT_TRUE(eps[3].terminating) << "terminating in either slice";
  EXPECT_EQ(eps[3].pod, "vllm-e");
}

std::vector<Endpoint> endpoint_slices_of_dual_stack() {
  return endpoints_of(
      slices({R"({"metadata":{"name":"v6"},"addressType":"IPv6","ports":[{"port":8000}],
                  "endpoints":[{"addresses":["fd00::9"],"targetRef":{"kind":"Pod","name":"vllm-x"}},
                               {"addresses":["fd00::10"],"targetRef":{"kind":"Pod","name":"vllm-y"}}]})",
              R"({"metadata":{"name":"v4"},"addressType":"IPv4","ports":[{"port":8000}],
                  "endpoints":[{"addresses":["10.0.0.9"],"targetRef":{"kind":"Pod","name":"vllm-x"}}]})"}),
      "");
}

TEST(EndpointSlicesOf, ADualStackPodIsOneEndpointAtItsIpv4Address) {
  const auto eps = endpoint_slices_of_dual_stack();
  ASSERT_EQ(eps.size(), 2u);
  EXPECT_EQ(eps[0].host_port(), "10.0.0.9:8000");
  EXPECT_EQ(eps[0].pod, "vllm-x");
  EXPECT_EQ(eps[1].host_port(), "[fd00::10]:8000");  // another pod, in one family only
  EXPECT_EQ(eps[1].pod, "vllm-y");
}

TEST(EndpointSliceVersion, V1WhenServedElseV1beta1ElseNone) {
  const auto group = [](std::string_view versions) {
    return json::parse(std::string(R"({"kind":"APIGroup","name":"discovery.k8s.io","versions":)") +
                       std::string(versions) + "}")
        .as_object();
  };
  // 1.20
  EXPECT_EQ(endpoint_slice_version(
                group(R"([{"groupVersion":"discovery.k8s.io/v1beta1","version":"v1beta1"}])")),
            "discovery.k8s.io/v1beta1");
  // 1.21 to 1.24: both
  EXPECT_EQ(endpoint_slice_version(
                group(R"([{"groupVersion":"discovery.k8s.io/v1","version":"v1"},)"
                      R"({"groupVersion":"discovery.k8s.io/v1beta1","version":"v1beta1"}])")),
            "discovery.k8s.io/v1");
  EXPECT_EQ(endpoint_slice_version(group("[]")), "");
  EXPECT_EQ(endpoint_slice_version(json::object{}), "");
}

TEST(ServiceOfHost, TheFirstLabelOfAClusterDnsNameInTheNamespace) {
  EXPECT_EQ(service_of_host("vllm.llm.svc", "llm"), "vllm");
  EXPECT_EQ(service_of_host("vllm.llm.svc.cluster.local", "llm"), "vllm");
  EXPECT_EQ(service_of_host("vllm.llm.svc.cluster.local.", "llm"), "vllm");
  EXPECT_EQ(service_of_host("vllm.other.svc.cluster.local", "llm"), "") << "another namespace";
  EXPECT_EQ(service_of_host("vllm", "llm"), "") << "a short name";
  EXPECT_EQ(service_of_host("vllm.llm", "llm"), "");
  EXPECT_EQ(service_of_host("vllm.llm.example.com", "llm"), "");
  EXPECT_EQ(service_of_host("10.0.0.7", "llm"), "");
  EXPECT_EQ(service_of_host("::1", "llm"), "");
  EXPECT_EQ(service_of_host(".llm.svc", "llm"), "");
  EXPECT_EQ(service_of_host("vllm.llm.svc", ""), "");
}

// --- the watch against an API server -----------------------------------------------------------

constexpr std::string_view kGroupV1beta1 =
    R"({"kind":"APIGroup","apiVersion":"v1","name":"discovery.k8s.io","versions":[)"
    R"({"groupVersion":"discovery.k8s.io/v1beta1","version":"v1beta1"}],)"
    R"("preferredVersion":{"groupVersion":"discovery.k8s.io/v1beta1","version":"v1beta1"}})";
constexpr std::string_view kGroupBoth =
    R"({"kind":"APIGroup","apiVersion":"v1","name":"discovery.k8s.io","versions":[)"
    R"({"groupVersion":"discovery.k8s.io/v1","version":"v1"},)"
    R"({"groupVersion":"discovery.k8s.io/v1beta1","version":"v1beta1"}]})";
constexpr std::string_view kSlicesPath =
    "/apis/discovery.k8s.io/v1beta1/namespaces/llm/endpointslices";
constexpr std::string_view kSelector = "labelSelector=kubernetes.io%2Fservice-name%3Dvllm";
constexpr std::string_view kWatchHead =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";

class EndpointSlicesTest : public testing::TlsApiTest {
 protected:
  // Discovery from `group` (404 when empty), lists from `list` under its status; watches are
  // served by the streamer, or never answered.
  std::optional<Reply> answer(const Request& req) {
    const std::string target(req.target());
    if (target == "/apis/discovery.k8s.io") {
      return group.empty() ? reply(http::status::not_found, R"({"kind":"Status","code":404})")
                           : reply(http::status::ok, group);
    }
    if (target.find("watch=1") != std::string::npos) {
      return std::nullopt;
    }
    if (target.find("/endpointslices?") != std::string::npos) {
      lists.push_back(target);
      return reply(list_status, list);
    }
    return reply(http::status::not_found, "{}");
  }

  EndpointSlices::Settings settings(const TlsServer& server) {
    return {.backend = "b", .namespace_ = "llm", .service = "vllm", .cluster = cluster(server)};
  }

  void run_until(const std::function<bool()>& done,
                 std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    testing::run_until(ioc_, done, limit);
  }

  void stop(EndpointSlices& e) {
    bool done = false;
    net::co_spawn(ioc_, e.shutdown(), [&](std::exception_ptr) { done = true; });
    run_until([&] { return done; });
    ASSERT_TRUE(done);
  }

  std::string group = std::string(kGroupV1beta1);
  http::status list_status = http::status::ok;
  std::string list =
      std::string(R"({"kind":"EndpointSliceList","metadata":{"resourceVersion":"7"},)") +
      R"("items":[)" + std::string(kV1beta1) + "]}";
  std::vector<std::string> lists;
};

TEST_F(EndpointSlicesTest, ListsTheServicesSlicesInTheServedVersionAndKeepsTheUsableOnes) {
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  EndpointSlices e(settings(server), ioc_.get_executor());
  int changes = 0;
  e.on_change([&] { ++changes; });
  EXPECT_FALSE(e.available());
  EXPECT_EQ(e.problem(),
            R"(the EndpointSlices of service "vllm" in namespace "llm" are not listed yet)");
  e.start();
  run_until([&] { return e.available(); });
  ASSERT_TRUE(e.available()) << e.problem();
  EXPECT_GE(changes, 1);
  ASSERT_EQ(lists.size(), 1u);
  EXPECT_EQ(lists[0], std::string(kSlicesPath) + "?" + std::string(kSelector));
  EXPECT_EQ(e.api(), "discovery.k8s.io/v1beta1");
  EXPECT_EQ(e.problem(), "");
  const auto usable = e.usable();
  ASSERT_EQ(usable.size(), 1u);
  EXPECT_EQ(usable[0].pod, "vllm-b");
  EXPECT_EQ(e.endpoints().size(), 2u);
  EXPECT_EQ(
      json::serialize(e.status()),
      R"({"service":"vllm","api":"discovery.k8s.io/v1beta1","available":true,"problem":"",)"
      R"("pods":[{"pod":"vllm-a","address":"127.0.0.2:8000","ready":false,"terminating":false},)"
      R"({"pod":"vllm-b","address":"127.0.0.3:8000","ready":true,"terminating":false}]})");
  stop(e);
}

TEST_F(EndpointSlicesTest, V1IsWatchedWhenTheServerServesIt) {
  group = std::string(kGroupBoth);
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  EndpointSlices e(settings(server), ioc_.get_executor());
  e.start();
  run_until([&] { return !lists.empty(); });
  ASSERT_EQ(lists.size(), 1u);
  EXPECT_TRUE(lists[0].starts_with("/apis/discovery.k8s.io/v1/namespaces/llm/endpointslices?"))
      << lists[0];
  run_until([&] { return e.available(); });
  EXPECT_EQ(e.api(), "discovery.k8s.io/v1");
  stop(e);
}

TEST_F(EndpointSlicesTest, AForbiddenListIsAProblemNotAFailureAndIsRetried) {
  list_status = http::status::forbidden;
  list = R"({"kind":"Status","code":403,"reason":"Forbidden","message":"endpointslices.)"
         R"(discovery.k8s.io is forbidden: User \"x\" cannot list resource"})";
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  auto s = settings(server);
  s.watch.backoff_max = std::chrono::milliseconds(200);
  EndpointSlices e(std::move(s), ioc_.get_executor());
  e.start();
  const std::string forbidden = R"(cannot list discovery.k8s.io/endpointslices in namespace "llm")";
  run_until([&] { return e.problem() == forbidden; });
  EXPECT_EQ(e.problem(), forbidden);
  EXPECT_FALSE(e.available());
  EXPECT_TRUE(e.usable().empty());
  // The Role is mended: the next attempt lists.
  list_status = http::status::ok;
  list = R"({"kind":"EndpointSliceList","metadata":{"resourceVersion":"7"},"items":[)" +
         std::string(kV1beta1) + "]}";
  run_until([&] { return e.available(); });
  EXPECT_TRUE(e.available());
  EXPECT_EQ(e.problem(), "");
  EXPECT_EQ(e.usable().size(), 1u);
  stop(e);
}

TEST_F(EndpointSlicesTest, AGroupNotServedAndAServiceWithoutSlicesAreProblems) {
  group.clear();
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  {
    EndpointSlices e(settings(server), ioc_.get_executor());
    e.start();
    const std::string unserved =
        "the API server serves no EndpointSlices (discovery.k8s.io v1 or v1beta1)";
    run_until([&] { return e.problem() == unserved; });
    EXPECT_EQ(e.problem(), unserved);
    EXPECT_FALSE(e.available());
    EXPECT_TRUE(lists.empty());
    stop(e);
  }
  group = std::string(kGroupV1beta1);
  list = R"({"kind":"EndpointSliceList","metadata":{"resourceVersion":"7"},"items":[]})";
  EndpointSlices e(settings(server), ioc_.get_executor());
  e.start();
  const std::string none =
      R"(no EndpointSlice of service "vllm" in namespace "llm" (no such Service, or one without )"
      R"(a selector))";
  run_until([&] { return e.problem() == none; });
  EXPECT_EQ(e.problem(), none);
  EXPECT_FALSE(e.available());
  stop(e);
}

TEST_F(EndpointSlicesTest, AListAnswered404AsksForTheVersionAgain) {
  // The server was upgraded: v1beta1 is gone (404), v1 is served.
  TlsServer server(ioc_, server_cert_, [this](const Request& r) {
    const std::string target(r.target());
    if (target.starts_with("/apis/discovery.k8s.io/v1beta1/")) {
      lists.push_back(target);
      return std::optional<Reply>(
          reply(http::status::not_found, R"({"kind":"Status","code":404})"));
    }
    return answer(r);
  });
  auto s = settings(server);
  s.watch.backoff_max = std::chrono::milliseconds(100);
  EndpointSlices e(std::move(s), ioc_.get_executor());
  e.start();
  run_until([&] { return !lists.empty(); });
  group = std::string(kGroupBoth);
  run_until([&] { return e.available(); });
  ASSERT_TRUE(e.available()) << e.problem();
  EXPECT_EQ(e.api(), "discovery.k8s.io/v1");
  EXPECT_TRUE(lists.front().starts_with("/apis/discovery.k8s.io/v1beta1/"));
  EXPECT_TRUE(lists.back().starts_with("/apis/discovery.k8s.io/v1/"));
  stop(e);
}

TEST_F(EndpointSlicesTest, AWatchEventTakesATerminatingPodOutAtOnce) {
  // The watch says vllm-b is terminating (v1), then that vllm-a became ready.
  const std::string terminating =
      R"({"type":"MODIFIED","object":{"kind":"EndpointSlice","metadata":{"name":"vllm-abcde",)"
      R"("resourceVersion":"8"},"addressType":"IPv4","ports":[{"name":"http","port":8000}],)"
      R"("endpoints":[{"addresses":["127.0.0.3"],"conditions":{"ready":true,"terminating":true},)"
      R"("targetRef":{"kind":"Pod","name":"vllm-b"}},{"addresses":["127.0.0.2"],)"
      R"("conditions":{"ready":false},"targetRef":{"kind":"Pod","name":"vllm-a"}}]}})"
      "\n";
  bool go = false;
  TlsServer server(ioc_, server_cert_, [this](const Request& r) { return answer(r); });
  server.stream_with(
      [&](const Request&, TlsServer::Stream& s) -> task<void> {
        co_await net::async_write(s, net::buffer(std::string(kWatchHead)), use_nothrow);
        while (!go) {
          Timer t(s.get_executor(), std::chrono::milliseconds(5));
          co_await t.async_wait(use_nothrow);
        }
        co_await net::async_write(s, net::buffer(testing::chunk(terminating)), use_nothrow);
        Timer t(s.get_executor(), std::chrono::hours(1));
        co_await t.async_wait(use_nothrow);
      },
      [](const Request& r) { return r.target().find("watch=1") != std::string::npos; });
  EndpointSlices e(settings(server), ioc_.get_executor());
  std::vector<std::size_t> seen;  // usable() at each change
  e.on_change([&] { seen.push_back(e.usable().size()); });
  e.start();
  run_until([&] { return e.usable().size() == 1; });
  ASSERT_EQ(e.usable().size(), 1u);
  go = true;
  run_until([&] { return e.usable().empty(); });
  EXPECT_TRUE(e.usable().empty());
  EXPECT_TRUE(e.available()) << "a Service with no usable pod is known, not unavailable";
  ASSERT_EQ(e.endpoints().size(), 2u);
  EXPECT_TRUE(e.endpoints()[1].terminating);
  EXPECT_EQ(seen.back(), 0u);
  stop(e);
}

}  // namespace
}  // namespace va::k8s
