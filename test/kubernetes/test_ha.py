"""Several proxy replicas in front of one vLLM Deployment, on the real control plane
(docs/high-availability.md): proxy processes with different identities coordinate through
coordination.k8s.io/v1 Leases, as the shipped ServiceAccount (whose Role has exactly the Lease verbs
they use).

- traffic only through a follower, for longer than idle_timeout: the leader does not scale the
  backend down under it; after the last response the Deployment is at 0 within idle_timeout and a
  few heartbeats;
- the leader SIGKILLed while idle: the other takes the leader Lease once it has expired, and the
  scale-down comes neither before idle_timeout after the last activity nor later than that plus
  lease_duration, the new leader's wait of one lease_duration and a few heartbeats."""

import os
import signal
import time

from conftest import MODEL
from support import chat, eventually, http, metrics

CHAT = chat(model=MODEL)
LEASE, BEAT = 3.0, 0.5


def coordinated(kubernetes_config, cluster, identity: str, idle: str) -> str:
    top = (f"coordination:\n  type: kubernetes\n  identity: {identity}\n"
           f"  lease_name: va-{os.getpid()}\n  namespace: {cluster.namespace}\n"
           f"  lease_duration: {LEASE:g}s\n  heartbeat_interval: {BEAT * 1000:g}ms\n"
           f"  kubeconfig: {cluster.proxy_kubeconfig}\n")
    return kubernetes_config(idle=idle, wake="60s", top=top,
                             extra="    health: { interval: 250ms }\n")


def replicas(cluster) -> int:
    return cluster.deployment()["spec"].get("replicas", 0)


def coordination(p) -> dict:
    return p.status()["coordination"]


def lease_writes(p) -> float:
    m = metrics(p.admin_url)
    return sum(v for k, v in m.items() if k.startswith("vllm_autoscaler_coordination_lease_writes_total"))


def leader_and_follower(a, b):
    """Once both see the same leader and each other: (leader, follower)."""
    def settled():
        ca, cb = coordination(a), coordination(b)
        live = lambda c: sum(m["live"] for m in c["members"])  # noqa: E731
        return ca["leader"] and ca["leader"] == cb["leader"] and live(ca) == 2 and live(cb) == 2

    eventually(settled, timeout=30, what="one leader seen by both replicas")
    return (a, b) if coordination(a)["leading"] else (b, a)


def two_replicas(cluster, kubernetes_config, proxy, idle: float):
    """The Deployment at 0; two coordinated proxies with `idle` as idle_timeout, once they agree
    on a leader: (leader, follower)."""
    cluster.scale(0)
    cluster.wait_no_pods()
    a = proxy(coordinated(kubernetes_config, cluster, "proxy-a", f"{idle:g}s"))
    b = proxy(coordinated(kubernetes_config, cluster, "proxy-b", f"{idle:g}s"))
    return leader_and_follower(a, b)


def test_traffic_through_a_follower_keeps_the_backend_up_and_the_leader_stops_it_after(
        cluster, kubernetes_config, proxy):
    idle = 6.0
    leader, follower = two_replicas(cluster, kubernetes_config, proxy, idle)
    writes = {p.pid: lease_writes(p) for p in (leader, follower)}
    began = time.monotonic()
    assert http("POST", follower.url + "/v1/chat/completions", CHAT, None, 60)[0] == 200
    # Requests through the follower only, for 3 idle_timeouts: never stopped under them.
    end = time.monotonic() + 3 * idle
    while time.monotonic() < end:
        status = http("POST", follower.url + "/v1/chat/completions", CHAT, None, 60)[0]
        last = time.monotonic()
        assert status == 200 and replicas(cluster) == 1, (status, replicas(cluster))
        time.sleep(1.0)
    # What coordination costs the API: the leader writes its Lease and its member Lease each
    # heartbeat, a follower its member Lease (and each lists the Leases once).
    took = time.monotonic() - began
    rates = {who: (lease_writes(p) - writes[p.pid]) / took
             for who, p in (("leader", leader), ("follower", follower))}
    print(f"\nLease writes per second (heartbeat {BEAT:g} s): leader {rates['leader']:.2f}, "
          f"follower {rates['follower']:.2f}")
    assert 1.5 / BEAT <= rates["leader"] <= 2.5 / BEAT and 0.5 / BEAT <= rates["follower"] <= 1.5 / BEAT
    assert leader.events("backend state") and not [
        e for e in leader.events("backend state") if e["to"] == "stopping"], "the leader stopped it"
    eventually(lambda: replicas(cluster) == 0, timeout=idle + 20, what="the Deployment at 0")
    stopped = time.monotonic()
    assert stopped - last >= 0.8 * idle, "stopped before idle_timeout after the last request"
    assert stopped - last <= idle + 10 * BEAT + 5, "stopped late"
    downs = [e for e in leader.events("backend state") if e["to"] == "stopping"]
    assert downs and "every proxy replica" in downs[0]["cause"], downs
    assert not [e for e in follower.events("backend state") if e["to"] == "stopping"]
    print(f"\nDeployment at 0 {stopped - last:.1f} s after the last request through the follower "
          f"(idle_timeout {idle:g} s)")
    cluster.wait_no_pods()


def test_the_leader_killed_while_idle_is_replaced_and_the_backend_still_stops_in_time(
        cluster, kubernetes_config, proxy):
    idle = 8.0
    leader, follower = two_replicas(cluster, kubernetes_config, proxy, idle)
    assert http("POST", leader.url + "/v1/chat/completions", CHAT, None, 60)[0] == 200
    last = time.monotonic()
    time.sleep(1.0)
    os.kill(leader.pid, signal.SIGKILL)  # its Leases stay as they were: expired after LEASE
    killed = time.monotonic()
    eventually(lambda: coordination(follower)["leading"], timeout=LEASE + 10,
               what="the follower leading")
    took_over = time.monotonic()
    eventually(lambda: replicas(cluster) == 0, timeout=idle + 2 * LEASE + 20,
               what="the Deployment at 0")
    stopped = time.monotonic()
    assert took_over - killed <= LEASE + 4 * BEAT + 2, "took over late"
    assert stopped - last >= 0.8 * idle, "stopped before idle_timeout"
    assert stopped - max(last + idle, took_over + LEASE) <= 4 * BEAT + 5, "stopped late"
    print(f"\nleader killed: taken over after {took_over - killed:.1f} s, Deployment at 0 "
          f"{stopped - last:.1f} s after the last request (idle_timeout {idle:g} s, lease "
          f"{LEASE:g} s)")
    cluster.wait_no_pods()
