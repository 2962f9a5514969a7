"""Pods from load (scaler.target_in_flight; docs/scaling.md) on the real control plane, the test
kubelet running each vLLM pod as a vllm-sim: a load ramp takes the Deployment from 1 to 4 pods and,
once the load stops, back down by halves to 1, then to 0 through the idle stop; every request is
answered in full meanwhile, each sent to a pod (docs/routing.md). With two proxy replicas, the leader sizes the Deployment for load that
reaches only the follower."""

import threading
import time

from conftest import MODEL
from ha import start_replicas
from support import chat, eventually, metrics, sse_events

# --shutdown-delay: as vLLM's --shutdown-timeout, a pod removed by a scale-down lets its streams end.
SIM_ARGS = ["--model", MODEL, "--itl", "50ms", "--startup-delay", "500ms", "--shutdown-delay", "5s"]
TARGET, MAX = 2, 4
AUTOSCALE = (f"      target_in_flight: {TARGET}\n      max_replicas: {MAX}\n"
             "      stable_window: 6s\n      panic_window: 2s\n      service: vllm\n")  # routed to pods
STREAM = chat(max_tokens=40, stream=True)  # 2 s at 50 ms a token


class Load:
    """`clients` threads, each sending streams to `url` one after another until stop(); every
    answer is checked: 200, then events up to [DONE] with a finish_reason."""

    def __init__(self, url: str, clients: int):
        self.url, self.stopped, self.lock = url, threading.Event(), threading.Lock()
        self.done, self.failures = 0, []
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _client(self):
        while not self.stopped.is_set():
            try:
                events = [data for _, data in sse_events(self.url + "/v1/chat/completions", STREAM, timeout=120)]
                ok = events[-1] == "[DONE]" and any('"finish_reason":"length"' in e for e in events)
                with self.lock:
                    self.done += 1
                    if not ok:
                        self.failures.append(events[-3:])
            except Exception as e:  # noqa: BLE001: every failure is reported by the test
                with self.lock:
                    self.failures.append(repr(e))

    def stop(self):
        self.stopped.set()
        for t in self.threads:
            t.join(timeout=150)
        assert not any(t.is_alive() for t in self.threads)


class Replicas:
    """The Deployment's spec.replicas and readyReplicas, sampled every 200 ms in a thread."""

    def __init__(self, cluster):
        self.cluster, self.samples, self.stopped = cluster, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            d = self.cluster.deployment()
            self.samples.append((time.monotonic(), d["spec"].get("replicas", 0),
                                 d.get("status", {}).get("readyReplicas", 0)))
            time.sleep(0.2)

    def stop(self):
        self.stopped.set()
        self.thread.join()

    def spec(self) -> list[int]:
        """spec.replicas as it changed, in order."""
        out = []
        for _, spec, _ in self.samples:
            if not out or out[-1] != spec:
                out.append(spec)
        return out


def test_a_load_ramp_scales_from_1_to_4_and_back_down_by_halves(cluster, kubernetes_config, proxy):
    cluster.scale(0)
    cluster.wait_no_pods()
    p = proxy(kubernetes_config(idle="25s", replicas=None, scaler=AUTOSCALE,
                                extra="    health: { interval: 250ms }\n"))
    seen = Replicas(cluster)
    try:
        one = Load(p.url, clients=1)
        eventually(lambda: seen.samples and seen.samples[-1][2] == 1, timeout=60, what="1 pod ready")
        time.sleep(3)
        more = Load(p.url, clients=7)
        eventually(lambda: seen.samples[-1][2] == MAX, timeout=60, what="4 pods ready under load")
        eventually(lambda: len(p.status()["backends"][0]["pods"]) == MAX, timeout=10, what="4 pods routed to")
        time.sleep(4)  # the load goes on with every pod ready
        one.stop()
        more.stop()
        stopped = time.monotonic()
        eventually(lambda: seen.samples[-1][1] == 0, timeout=120, what="the idle stop to 0")
    finally:
        seen.stop()
    failures, done = one.failures + more.failures, one.done + more.done
    assert failures == [] and done > 20, (done, failures[:3])
    spec = seen.spec()
    print(f"\n{done} streams; spec.replicas: {spec}")
    # Up (a wake for the first held requests, then the panic), then down by at most half each time
    # after the load stopped, to min_replicas; 0 only at the end, by the idle stop.
    top = spec.index(MAX)
    assert spec[:2] == [0, 1] and spec[1:top + 1] == sorted(spec[1:top + 1]), spec
    downs = spec[top + 1:]
    assert downs[-1] == 0 and downs[-2] == 1, spec
    for before, after in zip([MAX] + downs[:-2], downs[:-1]):
        assert after < before and 2 * after >= before, spec
    at_max = next(i for i, (_, s, _) in enumerate(seen.samples) if s == MAX)
    first_down = next(t for t, s, _ in seen.samples[at_max:] if s < MAX)
    assert first_down >= stopped - 1, "a pod removed under load"
    up = [e["message"] for e in cluster.proxy_events("ScaledUp")]
    down = [e["message"] for e in cluster.proxy_events("ScaledDown")]
    assert any(f"target {TARGET} → {MAX}" in m for m in up), up
    assert any(m.startswith(f"Scaled down from {MAX} to") and f"target {TARGET} →" in m for m in down), down
    status = p.status()["backends"][0]
    assert status["autoscale"]["max_replicas"] == MAX and status["autoscale"]["panic"] is False
    m = metrics(p.admin_url)
    assert m['vllm_autoscaler_desired_replicas{backend="vllm"}'] == 0
    assert m['vllm_autoscaler_autoscale_panic{backend="vllm"}'] == 0


def test_the_leader_sizes_the_deployment_for_load_that_reaches_only_a_follower(cluster, kubernetes_config, proxy):
    leader, follower = start_replicas(cluster, kubernetes_config, proxy, idle=30, replicas=None, scaler=AUTOSCALE)
    seen = Replicas(cluster)
    try:
        one = Load(follower.url, clients=1)  # the follower wakes it, for 1 pod
        eventually(lambda: seen.samples and seen.samples[-1][2] == 1, timeout=60, what="1 pod ready")
        more = Load(follower.url, clients=7)
        eventually(lambda: seen.samples[-1][1] >= 3, timeout=60, what="3 pods or more")
        one.stop()
        more.stop()
    finally:
        seen.stop()
    assert one.failures + more.failures == [], (one.failures + more.failures)[:3]
    ups = [e for e in leader.events("autoscaling")]
    assert any(e["to"] > e["from"] for e in ups), ups
    assert follower.events("autoscaling") == []
    assert leader.status()["backends"][0]["in_flight"] == 0
