"""The kubernetes scaler on a real control plane: wake, idle, adoption, someone else's kubectl
scale, a proxy restart. The proxy runs with the vllm-autoscaler ServiceAccount's token, so only
the shipped Role allows what it does; the real Deployment and ReplicaSet controllers create and
delete the pods, and the test kubelet runs one vllm-sim per pod."""

import concurrent.futures as cf
import json
import re
import threading
import time

import pytest

from conftest import MODEL
from support import chat, eventually, http, pid_alive

SIM_ARGS = ["--model", MODEL, "--startup-delay", "2s", "--itl", "1ms", "--shutdown-delay", "1s"]
CHAT = chat(model=MODEL)


@pytest.fixture(autouse=True)
def at_zero(cluster):
    """Each test starts with the Deployment at 0 and no pod left."""
    cluster.scale(0)
    cluster.wait_no_pods()
    yield


def post(p, body=CHAT, timeout=90):
    return http("POST", p.url + "/v1/chat/completions", body, None, timeout)


def test_cold_start_100_requests_one_patch_all_answered(cluster, kubernetes_config, proxy):
    p = proxy(kubernetes_config(idle="60s", wake="60s"))
    assert p.backend()["state"] == "asleep"
    patches_before = cluster.scale_patches()
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(100) as pool:
        results = list(pool.map(lambda _: post(p), range(100)))
    took = time.monotonic() - t0
    codes = [r[0] for r in results]
    assert codes == [200] * 100, codes
    assert all(json.loads(r[2])["model"] == MODEL for r in results)
    # One PATCH of the Scale, as the apiserver's audit log records it, by the proxy's account.
    assert cluster.scale_patches() - patches_before == 1
    d = cluster.deployment()
    assert d["spec"]["replicas"] == 1 and d["status"].get("readyReplicas") == 1
    assert len(cluster.kubelet.sim_pids()) == 1
    b = p.backend()
    assert (b["state"], b["wakes"]) == ("ready", 1)
    # The Event on the Deployment says why: kubectl get events / describe show it.
    events = eventually(lambda: cluster.proxy_events("ScaledUp"), what="ScaledUp event")
    # The requests held when the PATCH went out (the first ones may come alone).
    assert re.fullmatch(r"Scaled up from 0 to 1 replica: \d+ requests? held", events[-1]["message"])
    assert events[-1]["involvedObject"]["name"] == cluster.deployment_name
    assert "ScaledUp" in cluster.kubectl("describe", "deployment", cluster.deployment_name).stdout
    # The proxy's own share: from the PATCH to ready, and from ready to the first byte.
    scale = p.events("kubernetes scale")[0]
    ready = next(e for e in p.events("backend state") if e["to"] == "ready")
    print(f"\ncold start through the control plane: 100 requests in {took:.2f} s; "
          f"PATCH at {scale['ts']}, ready at {ready['ts']}")


def test_idle_scales_to_zero_deletes_the_pod_and_a_request_meanwhile_wakes_it(
        cluster, kubernetes_config, proxy):
    p = proxy(kubernetes_config(idle="2s", wake="60s"))
    assert post(p)[0] == 200
    [sim] = cluster.kubelet.sim_pids()
    p.wait_state("asleep", timeout=30)
    assert cluster.deployment()["spec"].get("replicas", 0) == 0
    # The pod is terminating (vllm-sim takes 1 s to shut down): a request now is held and wakes
    # the Deployment again.
    code, _, _ = post(p)
    assert code == 200
    assert p.backend()["wakes"] == 2
    eventually(lambda: not pid_alive(sim), what="the first pod's vllm-sim stopped")
    assert [e["reason"] for e in cluster.proxy_events()][-3:] == ["ScaledUp", "ScaledToZero",
                                                                   "ScaledUp"]
    # And back to 0 after idle again, the pod deleted, its vllm-sim stopped.
    p.wait_state("asleep", timeout=30)
    cluster.wait_no_pods()
    assert cluster.kubelet.sim_pids() == []


def test_a_hand_scaled_deployment_is_adopted_and_returned_to_zero(cluster, kubernetes_config,
                                                                   proxy):
    p = proxy(kubernetes_config(idle="3s"))
    patches_before = cluster.scale_patches()
    cluster.kubectl("scale", "deployment", cluster.deployment_name, "--replicas=1")
    ready_at = p.wait_state("ready", timeout=30)
    assert p.backend()["wakes"] == 0  # adopted, not woken
    assert post(p)[0] == 200
    asleep_at = p.wait_state("asleep", timeout=30)
    assert asleep_at - ready_at >= 2.5
    assert cluster.deployment()["spec"].get("replicas", 0) == 0
    assert cluster.scale_patches() - patches_before == 1  # only the scale-down
    cluster.wait_no_pods()


def test_a_hand_scale_to_zero_while_requests_are_held_wakes_it_again(cluster, kubernetes_config,
                                                                      proxy):
    p = proxy(kubernetes_config(idle="60s", wake="60s"))
    with cf.ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(post, p) for _ in range(5)]
        eventually(lambda: cluster.pods(), what="a pod created by the wake")
        cluster.kubectl("scale", "deployment", cluster.deployment_name, "--replicas=0")
        codes = [f.result()[0] for f in futures]
    assert codes == [200] * 5
    assert cluster.deployment()["spec"]["replicas"] == 1
    assert len(p.events("kubernetes scale")) == 2


def test_a_hand_scale_to_zero_while_streaming_lets_the_next_request_wake_it(
        cluster, kubernetes_config, proxy):
    p = proxy(kubernetes_config(idle="60s", wake="60s"))
    assert post(p)[0] == 200
    result = {}

    def stream():
        body = chat(model=MODEL, stream=True, max_tokens=400)
        result["answer"] = http("POST", p.url + "/v1/chat/completions", body, None, 60)

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.2)
    cluster.kubectl("scale", "deployment", cluster.deployment_name, "--replicas=0")
    t.join(60)
    # The stream ends (completed during vllm-sim's graceful shutdown, or with an error event); the
    # proxy notices the backend went away; the next request wakes it again.
    code, _, body = result["answer"]
    assert code == 200 and body.rstrip().endswith(b"data: [DONE]")
    p.wait_state("asleep", timeout=30)
    assert post(p)[0] == 200
    assert cluster.deployment()["spec"]["replicas"] == 1


def test_a_proxy_restart_adopts_the_backend_and_keeps_its_idle_clock(cluster, kubernetes_config,
                                                                      proxy):
    config = kubernetes_config(idle="4s", wake="60s")
    first = proxy(config)
    assert post(first)[0] == 200
    [sim] = cluster.kubelet.sim_pids()
    pod = list(cluster.pods())
    first.stop()
    # SIGTERM leaves the Deployment as it is.
    assert cluster.deployment()["spec"]["replicas"] == 1
    assert pid_alive(sim)
    second = proxy(config)
    started = time.monotonic()
    second.wait_state("ready", timeout=10)
    assert second.backend()["wakes"] == 0
    assert post(second)[0] == 200
    assert cluster.kubelet.sim_pids() == [sim] and list(cluster.pods()) == pod
    # Not scaled down early: idle counts from the adoption and the last request.
    time.sleep(2)
    assert cluster.deployment()["spec"]["replicas"] == 1
    asleep_at = second.wait_state("asleep", timeout=30)
    assert asleep_at - started >= 3.5
