"""The kubernetes scaler when things go wrong on a real control plane: pods that crash-loop, cannot
pull their image or cannot be scheduled; the Kubernetes API stopped, slow or restarted."""

import os
import signal
import threading
import time

import pytest

from conftest import MODEL
from support import chat, eventually, http, start_sim

SIM_ARGS = ["--model", MODEL, "--startup-delay", "1s", "--itl", "1ms"]
CHAT = chat(model=MODEL)


@pytest.fixture(autouse=True)
def at_zero(cluster):
    cluster.set_simulate(None)
    cluster.scale(0)
    cluster.wait_no_pods()
    yield
    cluster.set_simulate(None)


def post(p, timeout=90):
    return http("POST", p.url + "/v1/chat/completions", CHAT, None, timeout)


@pytest.mark.parametrize("mode,reason", [("crashloop", "CrashLoopBackOff"),
                                         ("imagepull", "ImagePull")])
def test_a_failing_pod_fails_held_requests_early_naming_the_reason(cluster, kubernetes_config,
                                                                   proxy, mode, reason):
    cluster.set_simulate(mode)
    p = proxy(kubernetes_config(wake="120s"))
    t0 = time.monotonic()
    code, headers, body = post(p)
    took = time.monotonic() - t0
    assert code == 503, body
    assert reason.encode() in body
    assert "retry-after" in headers
    assert took < 30  # far below wake_timeout (120 s)
    # The GPU goes back: the failed wake scales the Deployment to 0 again.
    eventually(lambda: cluster.deployment()["spec"].get("replicas", 0) == 0, timeout=30,
               what="scaled back to 0")
    # It shows `stopping` while the scale call is answered, then `failed` again.
    eventually(lambda: p.backend()["state"] == "failed", timeout=10, what="failed once stopped")


def test_an_unschedulable_pod_is_reported_and_waited_on(cluster, kubernetes_config, proxy):
    cluster.set_simulate("unschedulable")
    p = proxy(kubernetes_config(wake="120s"))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", post(p)))
    t.start()
    eventually(lambda: "unschedulable" in (p.backend()["last_error"] or ""), timeout=30,
               what="/status reporting the unschedulable pod")
    assert p.backend()["state"] == "waking" and p.backend()["pending"] == 1
    # A node with room appears: the pod is scheduled and starts; the held request is answered.
    for pod in cluster.pods():
        cluster.kubectl("annotate", "pod", pod, "vllm-autoscaler.test/simulate-")
    t.join(60)
    assert result["r"][0] == 200


def test_the_watch_survives_an_apiserver_restart(cluster, kubernetes_config, proxy):
    p = proxy(kubernetes_config(idle="60s"))
    cluster.control_plane.restart_apiserver()
    # No request: the proxy learns of the hand scale-up only through its (resumed) watch.
    cluster.kubectl("scale", "deployment", cluster.deployment_name, "--replicas=1")
    p.wait_state("ready", timeout=30)
    assert p.backend()["wakes"] == 0
    assert p.events("kubernetes watch failed; retrying")  # the restart cut the watches
    assert post(p)[0] == 200


def test_api_down_other_backends_and_admin_keep_serving_held_requests_get_the_error(
        cluster, kubernetes_config, proxy, procs):
    other = start_sim(None, "other-model")
    procs.append(other)
    config = kubernetes_config(wake="8s", idle="60s") + (
        f"  - name: other\n    models: [other-model]\n"
        f"    upstream: http://127.0.0.1:{other.port}\n    scaler: {{ type: static }}\n")
    p = proxy(config)
    eventually(lambda: len(p.events("kubernetes list")) == 2, what="the first lists")
    apiserver = cluster.control_plane.pids()["kube-apiserver"]
    os.kill(apiserver, signal.SIGSTOP)  # accepts connections, answers nothing: slow and down
    try:
        t0 = time.monotonic()
        code, _, body = post(p)
        took = time.monotonic() - t0
        assert code == 503, body
        assert b"did not become ready within 8s" in body and b"kubernetes API" in body, body
        assert 7 < took < 20
        # The rest of the proxy is unaffected.
        assert http("POST", p.url + "/v1/chat/completions", chat(model="other-model"))[0] == 200
        assert http("GET", p.admin_url + "/healthz")[0] == 200
        assert p.alive()
        # Nothing spins: a handful of scale attempts, with backoff, while the request waited.
        assert len(p.events("scale-up failed; retrying")) <= 8
    finally:
        os.kill(apiserver, signal.SIGCONT)
    # The API is back: the next request wakes the backend normally.
    eventually(lambda: p.backend()["state"] in ("failed", "asleep", "waking", "ready"))
    assert post(p)[0] == 200
    assert cluster.deployment()["spec"]["replicas"] == 1
