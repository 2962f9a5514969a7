"""The pods behind the vLLM Service as the proxy sees them, from the Service's EndpointSlices
(scaler.service), on a real 1.20 control plane: the real EndpointSlice controller publishes the
test kubelet's pods (each on its own 127.0.0.x) as discovery.k8s.io/v1beta1 slices, and the proxy
watches them with the shipped Role. /status lists the pods with their addresses; a deleted pod
leaves the usable set while it is still terminating and its replacement joins; a Role without
endpointslices is a problem shown in /status, not a failure: the proxy stays ready and serves
through the upstream URL, and picks the slices up once the Role allows it again; at zero replicas
the Service is known, with no pod."""

import json
import time
import urllib.parse

import pytest

from conftest import MODEL
from support import chat, eventually, http

# A deleted pod's sim serves on for 3 s after SIGTERM: the pod stays terminating that long.
SIM_ARGS = ["--model", MODEL, "--itl", "1ms", "--shutdown-delay", "3s"]
REPLICAS = 3
FORBIDDEN = 'cannot list discovery.k8s.io/endpointslices in namespace "llm"'


@pytest.fixture(scope="module", autouse=True)
def three_pods(cluster):
    """The vLLM Deployment at 3 Ready pods for the whole file (the proxies adopt it: idle 10m)."""
    cluster.scale(REPLICAS)
    eventually(lambda: len(cluster.kubelet.endpoints()) == REPLICAS, timeout=60, what="3 Ready pods")
    yield


def config(kubernetes_config):
    return kubernetes_config(scaler="      service: vllm\n", idle="10m", replicas=REPLICAS)


def endpoints(p) -> list[dict]:
    """/status's endpoints.pods: every endpoint of the Service's slices."""
    return p.backend()["endpoints"]["pods"]


def usable(p) -> list[dict]:
    return [pod for pod in endpoints(p) if pod["ready"] and not pod["terminating"]]


def watch(p) -> dict:
    """/status's endpoints without its pods."""
    return {k: v for k, v in p.backend()["endpoints"].items() if k != "pods"}


def ready_pods(cluster) -> dict[str, str]:
    """pod name -> "127.0.0.x:port" of the kubelet's pods that are Ready and not terminating."""
    ready = set(cluster.kubelet.endpoints())
    return {name: f"{pod['address']}:{pod['port']}" for name, pod in cluster.kubelet.pods().items()
            if (pod["address"], pod["port"]) in ready}


def may_list_slices(cluster) -> bool:
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"namespace": cluster.namespace, "verb": "list",
                                              "group": "discovery.k8s.io", "resource": "endpointslices"}}}
    status, obj = cluster.control_plane.api("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                            review, token=cluster.proxy_token())
    assert status == 201, obj
    return obj["status"]["allowed"]


def test_status_lists_the_ready_pods_of_the_service_at_the_kubelets_addresses(cluster, kubernetes_config,
                                                                             proxy):
    p = proxy(config(kubernetes_config))
    eventually(lambda: len(usable(p)) == REPLICAS, timeout=15, what="3 usable pods in /status")
    assert watch(p) == {"service": "vllm", "api": "discovery.k8s.io/v1beta1", "available": True, "problem": ""}
    want = ready_pods(cluster)
    assert len(want) == REPLICAS
    assert {pod["pod"]: pod["address"] for pod in endpoints(p)} == want
    # In address order, as every proxy replica sees them.
    addresses = [pod["address"] for pod in endpoints(p)]
    assert addresses == sorted(addresses, key=lambda a: tuple(int(x) for x in a.replace(":", ".").split(".")))
    assert p.events("kubernetes: watching the endpoints of the service")[0]["api"] == "discovery.k8s.io/v1beta1"
    # And they are what requests are routed to.
    eventually(lambda: {x["pod"]: x["address"] for x in p.backend()["pods"]} == want, timeout=5,
               what="the pods routed to")


def test_a_deleted_pod_leaves_the_usable_set_while_terminating_and_its_replacement_joins(
        cluster, kubernetes_config, proxy):
    p = proxy(config(kubernetes_config))
    eventually(lambda: len(usable(p)) == REPLICAS, timeout=15, what="3 usable pods in /status")
    before = {pod["pod"] for pod in usable(p)}
    victim = sorted(before)[0]
    pod_path = f"/api/v1/namespaces/{cluster.namespace}/pods/{victim}"
    t0 = time.monotonic()
    cluster.kubectl("delete", "pod", victim, "--wait=false")
    eventually(lambda: victim not in {pod["pod"] for pod in usable(p)}, timeout=5,
               what="the deleted pod out of the usable set")
    took = time.monotonic() - t0
    assert victim not in {x["pod"] for x in p.backend()["pods"]}  # nor routed to
    # At once: the pod is still there, terminating (its sim serves 3 s more), when the proxy drops it.
    status, pod = cluster.control_plane.api("GET", pod_path)
    assert status == 200 and pod["metadata"].get("deletionTimestamp"), (status, pod)
    print(f"\nthe deleted pod left the usable set after {took * 1000:.0f} ms, while terminating")
    assert took < 2.5
    # The ReplicaSet's replacement joins once Ready; the deleted pod is gone from the list.
    eventually(lambda: len(usable(p)) == REPLICAS and victim not in {pod["pod"] for pod in endpoints(p)},
               timeout=30, what="the replacement pod usable")
    after = {pod["pod"]: pod["address"] for pod in usable(p)}
    assert set(after) - before and victim not in after
    assert after == ready_pods(cluster)


def test_a_role_without_endpointslices_is_a_problem_in_status_and_the_proxy_serves_through_the_service(
        cluster, kubernetes_config, proxy):
    with cluster.role_without(["endpointslices"], "list"):
        eventually(lambda: not may_list_slices(cluster), timeout=10, what="the Role without list in force")
        p = proxy(config(kubernetes_config))
        eventually(lambda: watch(p)["problem"] == FORBIDDEN, timeout=15, what="/status naming the missing verb")
        assert watch(p)["available"] is False and endpoints(p) == []
        assert p.backend()["pods"] == []  # routed through the upstream URL
        # Not a setup failure: the proxy works without it. Ready once the scaler's checks answer.
        eventually(lambda: http("GET", p.admin_url + "/readyz")[0] == 200, timeout=15, what="/readyz 200")
        assert p.backend()["setup_problems"] == []
        p.wait_state("ready")  # adopted: 3 pods up
        code, _, body = http("POST", p.url + "/v1/chat/completions", chat(model=MODEL), None, 30)
        assert code == 200, body
        assert json.loads(body)["model"] == MODEL
        assert any(e["problem"] == FORBIDDEN for e in p.events("kubernetes: the endpoints of the service are not usable"))
        assert http("GET", p.admin_url + "/readyz")[:1] == (200,)
    # The Role mended: the watch, which kept trying with backoff, lists without a restart.
    eventually(lambda: may_list_slices(cluster), timeout=10, what="the shipped Role in force")
    eventually(lambda: watch(p)["available"], timeout=20, what="the slices listed")
    assert len(usable(p)) == REPLICAS and watch(p)["problem"] == ""


def test_at_zero_replicas_the_service_is_known_with_no_pod(cluster, kubernetes_config, proxy):
    """The EndpointSlice controller keeps an empty slice for a Service without pods: the proxy
    tells "no pod" (available, none usable) from "no Service" (a problem)."""
    p = proxy(config(kubernetes_config))
    eventually(lambda: len(usable(p)) == REPLICAS, timeout=15, what="3 usable pods in /status")
    cluster.scale(0)
    eventually(lambda: endpoints(p) == [], timeout=10, what="no pod in /status")
    assert watch(p)["available"] is True and watch(p)["problem"] == ""
    cluster.wait_no_pods()
    assert watch(p)["available"] is True and endpoints(p) == []
