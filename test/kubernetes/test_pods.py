"""Requests routed to pods (docs/routing.md) on the real control plane: the proxy learns the vLLM
pods from the Service's EndpointSlices (published by the real EndpointSlice controller for the test
kubelet's pods, each a vllm-sim on its own 127.0.0.x) and picks one per request.

- least_outstanding keeps the requests in flight on each pod even (16 on 4 pods: max − min within 3,
  where a blind spread is often 4 or more);
- prefix sends the same prompt prefix to the same pod from two proxies that share nothing, and a
  hot prefix spills over to other pods within the bound (1.25 × the mean);
- a pod deleted mid-stream: its streams end with an error event and [DONE], the others are
  whole, and new requests avoid it at once."""

import threading
import time

from conftest import MODEL
from support import chat, eventually, metrics, sse_events

SIM_ARGS = ["--model", MODEL, "--itl", "20ms", "--block-size", "16"]
PROBE_PERIOD = 0.5
PODS = 4
SYSTEM = [f"You are assistant number {i}. " + "Answer briefly and politely. " * 60 for i in range(6)]


def config(kubernetes_config, routing: str) -> str:
    return kubernetes_config(idle="120s", replicas=PODS, scaler="      service: vllm\n",
                             extra=f"    routing: {routing}\n    health: {{ interval: 250ms }}\n")


def pods_of(p) -> list[dict]:
    return p.status()["backends"][0]["pods"]


def with_pods(cluster, p) -> None:
    """Wakes the backend and waits for PODS pods to be ready and routed to."""
    status, _, _ = p.post_chat(chat(model=MODEL)) if hasattr(p, "post_chat") else (None, None, None)
    if status is None:
        sse_events(p.url + "/v1/chat/completions", chat(model=MODEL, stream=True), timeout=120)
    eventually(lambda: len(pods_of(p)) == PODS, timeout=90, what=f"{PODS} pods routed to")


def sim_metric(cluster, pod: str, name: str) -> float:
    m = metrics(f"http://{cluster.kubelet.address_of(pod)}:8000/metrics")
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


def per_pod(cluster, name: str) -> dict[str, float]:
    return {pod: sim_metric(cluster, pod, name) for pod in cluster.kubelet.pods()}


def prompt(system: str, user: str, stream: bool = False, max_tokens: int = 2) -> dict:
    body = {"model": MODEL, "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
    if stream:
        body["stream"] = True
    return body


class Streams:
    """`n` streams of `body` at once through `url`, each in its own thread: their SSE payloads."""

    def __init__(self, url: str, bodies: list[dict]):
        self.results: list[list[str] | str] = [None] * len(bodies)
        self.threads = [threading.Thread(target=self._one, args=(i, url, b), daemon=True)
                        for i, b in enumerate(bodies)]
        for t in self.threads:
            t.start()

    def _one(self, i, url, body):
        try:
            self.results[i] = [d for _, d in sse_events(url + "/v1/chat/completions", body, timeout=120)]
        except Exception as e:  # noqa: BLE001: reported by the test
            self.results[i] = repr(e)

    def join(self) -> list:
        for t in self.threads:
            t.join(timeout=150)
        return self.results


def whole(events) -> bool:
    return isinstance(events, list) and events[-1] == "[DONE]" and any(
        '"finish_reason":"length"' in e.replace(" ", "") for e in events)


def test_least_outstanding_keeps_in_flight_requests_even(cluster, kubernetes_config, proxy):
    cluster.scale(0)
    cluster.wait_no_pods()
    p = proxy(config(kubernetes_config, "least_outstanding"))
    with_pods(cluster, p)
    streams = Streams(p.url, [chat(model=MODEL, stream=True, max_tokens=150) for _ in range(16)])
    eventually(lambda: sum(per_pod(cluster, "vllm:num_requests_running").values()) == 16, timeout=20,
               what="16 streams running")
    running = per_pod(cluster, "vllm:num_requests_running")
    in_flight = {x["pod"]: x["in_flight"] for x in pods_of(p)}
    results = streams.join()
    print(f"\nrunning per pod: {sorted(running.values())}")
    assert all(whole(r) for r in results), [r for r in results if not whole(r)][:2]
    assert len(running) == PODS and max(running.values()) - min(running.values()) <= 3, running
    assert sorted(in_flight.values()) == sorted(running.values()), (in_flight, running)


def test_a_prefix_goes_to_the_same_pod_from_two_proxies_and_a_hot_one_spills(cluster, kubernetes_config, proxy):
    a = proxy(config(kubernetes_config, "prefix"))
    with_pods(cluster, a)
    b = proxy(config(kubernetes_config, "prefix"))
    eventually(lambda: len(pods_of(b)) == PODS, timeout=30, what="the second proxy's pods")
    homes = set()
    for i, system in enumerate(SYSTEM):
        before = per_pod(cluster, "vllm:prompt_tokens_total")
        for n, p in enumerate([a, b, a, b]):
            events = sse_events(p.url + "/v1/chat/completions", prompt(system, f"question {n}", stream=True))
            assert events[-1][1] == "[DONE]"
        after = per_pod(cluster, "vllm:prompt_tokens_total")
        served = [pod for pod in after if after[pod] > before.get(pod, 0)]
        assert len(served) == 1, f"prefix {i} went to {served}"
        homes.add(served[0])
    assert len(homes) > 1, "every prefix on one pod"
    # One hot prefix, 12 streams at once through one proxy: no pod above ceil(1.25 × 12 / 4) = 4.
    streams = Streams(a.url, [prompt(SYSTEM[0], f"user {i}", stream=True, max_tokens=150) for i in range(12)])
    eventually(lambda: sum(per_pod(cluster, "vllm:num_requests_running").values()) == 12, timeout=20,
               what="12 streams running")
    running = per_pod(cluster, "vllm:num_requests_running")
    results = streams.join()
    print(f"\nhot prefix, running per pod: {sorted(running.values())}")
    assert all(whole(r) for r in results)
    assert max(running.values()) <= 4 and sum(1 for v in running.values() if v > 0) >= 3, running


def test_a_pod_deleted_mid_stream_ends_its_streams_and_gets_no_new_request(cluster, kubernetes_config, proxy):
    p = proxy(config(kubernetes_config, "least_outstanding"))
    with_pods(cluster, p)
    streams = Streams(p.url, [chat(model=MODEL, stream=True, max_tokens=400) for _ in range(8)])
    eventually(lambda: sum(per_pod(cluster, "vllm:num_requests_running").values()) == 8, timeout=20,
               what="8 streams running")
    victim = next(x for x in pods_of(p) if x["in_flight"] > 0)
    on_victim = victim["in_flight"]
    cluster.kubectl("delete", "pod", victim["pod"], "--wait=false")
    gone = time.monotonic()
    eventually(lambda: victim["address"] not in [x["address"] for x in pods_of(p)], timeout=5,
               what="the deleted pod out of the routing")
    left_after = time.monotonic() - gone
    # New requests right away: every one answered, none on the deleted pod.
    for i in range(20):
        events = sse_events(p.url + "/v1/chat/completions", chat(model=MODEL, stream=True, max_tokens=3))
        assert events[-1][1] == "[DONE]", events[-3:]
    results = streams.join()
    cut = [r for r in results if not whole(r)]
    print(f"\ndeleted {victim['pod']} with {on_victim} streams on it; out of the routing after {left_after:.2f} s; "
          f"{len(cut)} streams ended early")
    assert len(cut) == on_victim, [r[-3:] if isinstance(r, list) else r for r in cut]
    for r in cut:  # ended with vLLM's error shape, then [DONE]: never a silent cut
        assert isinstance(r, list) and r[-1] == "[DONE]" and '"error"' in r[-2], r[-3:]


def test_a_proxy_that_routed_to_pods_stops_at_once_on_sigterm(cluster, kubernetes_config, proxy):
    """Idle keep-alive connections to the pods end with the proxy: SIGTERM is a clean exit, not
    the 5 s watchdog's (found by review: only the upstream URL's pool was cleared)."""
    p = proxy(config(kubernetes_config, "least_outstanding"))
    with_pods(cluster, p)
    for _ in range(8):
        sse_events(p.url + "/v1/chat/completions", chat(model=MODEL, stream=True, max_tokens=3))
    assert sum(x["in_flight"] for x in pods_of(p)) == 0
    began = time.monotonic()
    assert p.stop() == 0
    took = time.monotonic() - began
    assert "did not drain" not in p.output(), p.output()[-500:]
    assert took < 3, f"took {took:.1f} s to stop"
