"""Several proxy replicas under the faults that matter (docs/high-availability.md), on the real
control plane, with three proxy processes:

- the race between the leader's "everyone is idle" and a new request on another replica, repeated
  (VA_HA_RACE_ROUNDS, at least 200 in CI): requests and streams sent to the followers at offsets
  spread over the fence's run; every one is answered 200 in full (a held one after a fresh wake is
  fine), and no scale-down comes while one of them is in flight;
- a rolling update of the proxies (maxSurge 1: a new replica joins, then an old one is SIGTERMed,
  twice) under a stream through an old replica: the stream is not cut and the backend is not
  scaled down under it;
- the API server restarted while a fence runs: that fence scales nothing down; the backend goes to
  0 later, by a fence proposed once the API server is back."""

import os
import signal
import threading
import time

from conftest import MODEL
from ha import CHAT, LEASE, coordination, coordinated, replicas, scale_downs, settled, start_replicas
from support import chat, eventually, http, metrics, sse_events

ROUNDS = int(os.environ.get("VA_HA_RACE_ROUNDS", "200"))
# The kubelet's readiness probe: most of a round is the wake after a scale-down, and most of a
# wake is waiting for this probe (1 s elsewhere).
PROBE_PERIOD = 0.2


def fence_of(p):
    return coordination(p).get("fence")


def new_fence(p, last: str | None) -> dict | None:
    """The fence `p` runs now, unless it is the one with the id `last`."""
    fence = fence_of(p)
    return fence if fence and fence["id"] != last else None


def fences(p, verdict: str) -> float:
    return metrics(p.admin_url).get(
        f'vllm_autoscaler_coordination_fences_total{{backend="vllm",result="{verdict}"}}', 0)


def completion(p, stream: bool) -> tuple[int, str]:
    """A chat completion through `p`: (status, "" or what was wrong with the answer)."""
    url = p.url + "/v1/chat/completions"
    if not stream:
        status, _, body = http("POST", url, CHAT, None, 60)
        return status, "" if status != 200 or b'"finish_reason":"length"' in body.replace(b" ", b"") else "cut"
    events = sse_events(url, chat(model=MODEL, stream=True, max_tokens=20), timeout=60)
    payloads = [data for _, data in events]
    finished = [d for d in payloads if '"finish_reason":"length"' in d.replace(" ", "")]
    whole = payloads and payloads[-1] == "[DONE]" and len(finished) == 1
    return 200, "" if whole else f"cut after {len(payloads)} events"


class Watch:
    """Polls the Deployment's replicas in a thread: whether it was ever seen at 0."""

    def __init__(self, cluster):
        self.cluster, self.zero, self.done = cluster, False, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            self.zero = self.zero or replicas(self.cluster) == 0
            time.sleep(0.1)

    def stop(self) -> bool:
        self.done.set()
        self.thread.join()
        return self.zero


def test_requests_racing_the_scale_down_on_the_followers_are_all_answered_in_full(
        cluster, kubernetes_config, proxy):
    idle, lease, beat = 0.5, 3.0, 0.25
    leader, *followers = start_replicas(cluster, kubernetes_config, proxy, idle, n=3, lease=lease, beat=beat)
    assert completion(followers[0], False) == (200, "")
    time.sleep(lease)  # the new leader's own wait
    began, woken, last_fence = time.monotonic(), 0, None
    for i in range(ROUNDS):
        # Once the leader has proposed the scale-down, a request lands on a follower somewhere in
        # the fence's run (each follower answers at its next heartbeat; the leader decides a
        # quarter heartbeat after the last answer): before, during, or after the scale-down.
        fence = eventually(lambda: new_fence(leader, last_fence), timeout=idle + 2 * lease + 10,
                           what=f"round {i}: a new fence")
        last_fence = fence["id"]
        time.sleep((i % 20) * 1.5 * beat / 20)
        up = replicas(cluster) > 0
        status, wrong = completion(followers[i % 2], stream=i % 4 >= 2)
        assert (status, wrong) == (200, ""), f"round {i}: {status} {wrong}"
        woken += not up
    took = time.monotonic() - began
    downs = len(scale_downs(leader))
    verdicts = {v: fences(leader, v) for v in ("agreed", "busy", "unanswered", "lost")}
    assert not any(scale_downs(f) for f in followers), "a follower scaled down"
    # Some rounds came after the scale-down (a fresh wake), most before the decision (cancelled).
    print(f"\n{ROUNDS} rounds in {took:.0f} s: {downs} scale-downs, {woken} requests sent with the Deployment already at 0; "
          f"fences {verdicts}")
    assert 0 < downs < ROUNDS
    # Every replica is up and answering: each fence is decided by the answers, none by the timeout.
    assert verdicts["unanswered"] == verdicts["lost"] == 0, verdicts
    assert verdicts["agreed"] == downs and verdicts["busy"] > 0, verdicts


def stop(p) -> None:
    """SIGTERM, as the kubelet sends it, then wait for the process to end (its shutdown)."""
    os.kill(p.pid, signal.SIGTERM)
    eventually(lambda: not p.alive(), timeout=60, what=f"{p!r} ended")


def test_a_rolling_update_of_the_proxies_under_a_stream_cuts_nothing_and_stops_nothing_early(
        cluster, kubernetes_config, proxy):
    idle = 3.0
    old_leader, old_follower = start_replicas(cluster, kubernetes_config, proxy, idle)
    config = lambda name: coordinated(kubernetes_config, cluster, name, f"{idle:g}s")  # noqa: E731
    assert completion(old_follower, False) == (200, "")
    # A stream through an old replica, longer than the whole update (about 15 s at 1 ms a token).
    answer = {}
    streaming = threading.Thread(target=lambda: answer.update(events=sse_events(
        old_follower.url + "/v1/chat/completions", chat(model=MODEL, stream=True, max_tokens=15000), timeout=120)))
    watch = Watch(cluster)
    streaming.start()
    # maxSurge 1, maxUnavailable 0: a new replica joins before an old one is terminated, twice;
    # the leader goes first, then the replica serving the stream (which drains it).
    surge = proxy(config("proxy-c"))
    settled([old_leader, old_follower, surge])
    stop(old_leader)
    second = proxy(config("proxy-d"))
    settled([old_follower, surge, second])
    assert streaming.is_alive(), "the stream ended before the update did: make it longer"
    stop_thread = threading.Thread(target=stop, args=(old_follower,))
    stop_thread.start()
    streaming.join(timeout=120)
    ended = time.monotonic()
    stop_thread.join()
    zero_during = watch.stop()
    payloads = [data for _, data in answer["events"]]
    assert payloads[-1] == "[DONE]" and any('"finish_reason":"length"' in d.replace(" ", "") for d in payloads), \
        payloads[-3:]
    assert not zero_during, "the backend was scaled down under the stream"
    # The new replicas take it from there: 0 after idle_timeout, once one of them has led for a
    # lease_duration.
    new = settled([surge, second])
    eventually(lambda: replicas(cluster) == 0, timeout=idle + 2 * LEASE + 15, what="the Deployment at 0")
    assert time.monotonic() - ended >= 0.8 * idle, "stopped before idle_timeout after the stream"
    assert scale_downs(new[0]) and not scale_downs(new[1])
    print(f"\nrolling update under a {len(payloads)}-event stream: complete; Deployment at 0 "
          f"{time.monotonic() - ended:.1f} s after it ended")
    cluster.wait_no_pods()


def decided(p, fence_id: str) -> list[str]:
    """The verdicts `p` logged for the fence `fence_id`."""
    return [e["verdict"] for e in p.events("coordination: scale-down decided") if e["fence"] == fence_id]


def test_the_api_server_restarted_during_a_fence_scales_nothing_down_by_that_fence(
        cluster, kubernetes_config, proxy):
    idle, lease, beat = 2.0, 4.0, 1.0
    leader, follower = start_replicas(cluster, kubernetes_config, proxy, idle, lease=lease, beat=beat)
    assert completion(follower, False) == (200, "")
    # The API server frozen the moment the leader proposes (before any member can have answered:
    # they read the leader Lease once a heartbeat), then restarted (~8 s without an API).
    fence = eventually(lambda: fence_of(leader), timeout=idle + 2 * lease + 10, what="a fence")
    apiserver = cluster.control_plane.pids()["kube-apiserver"]
    os.kill(apiserver, signal.SIGSTOP)
    frozen = time.monotonic()
    # A request through the follower meanwhile: served by the pod that is still there.
    answer = {}
    during = threading.Thread(target=lambda: answer.update(r=completion(follower, False)))
    during.start()
    cluster.control_plane.restart_apiserver()
    back = time.monotonic()
    assert replicas(cluster) == 1, "scaled down by a fence that did not complete"
    during.join(timeout=60)
    assert answer["r"] == (200, ""), answer
    # That fence was dropped, never agreed; the backend goes to 0 later, by another one.
    eventually(lambda: replicas(cluster) == 0, timeout=idle + 3 * lease + 20, what="the Deployment at 0")
    verdicts = [v for p in (leader, follower) for v in decided(p, fence["id"])]
    assert verdicts and "agreed" not in verdicts, verdicts
    agreed = [e["fence"] for p in (leader, follower) for e in p.events("coordination: scale-down decided")
              if e["verdict"] == "agreed"]
    assert agreed and fence["id"] not in agreed
    print(f"\nAPI server frozen {back - frozen:.1f} s during fence {fence['id']} ({verdicts}); "
          f"the Deployment at 0 {time.monotonic() - back:.1f} s after it was back, by fence {agreed[0]}")
    cluster.wait_no_pods()
