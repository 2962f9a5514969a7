"""Several coordinated proxy processes on the real control plane, for test_ha*.py: their configs,
what their /status and /metrics say about coordination, and the wait for them to agree on a leader."""

import os

from conftest import MODEL
from support import chat, eventually, metrics

CHAT = chat(model=MODEL)
LEASE, BEAT = 3.0, 0.5  # lease_duration and heartbeat_interval, in seconds, unless a test says


def coordinated(kubernetes_config, cluster, identity: str, idle: str, lease: float = LEASE, beat: float = BEAT,
                top: str = "") -> str:
    """A proxy config with coordination through the Leases of this test process's group."""
    top += (f"coordination:\n  type: kubernetes\n  identity: {identity}\n"
            f"  lease_name: va-{os.getpid()}\n  namespace: {cluster.namespace}\n"
            f"  lease_duration: {lease * 1000:g}ms\n  heartbeat_interval: {beat * 1000:g}ms\n"
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


def settled(ps, timeout: float = 30) -> list:
    """Once every proxy of `ps` sees the same leader and all of them live: the leader first, then
    the followers in the order given."""
    def agreed():
        seen = [coordination(p) for p in ps]
        return seen[0]["leader"] and all(
            c["leader"] == seen[0]["leader"] and sum(m["live"] for m in c["members"]) == len(ps) for c in seen)

    eventually(agreed, timeout=timeout, what="one leader seen by every replica")
    leader = next(p for p in ps if coordination(p)["leading"])
    return [leader] + [p for p in ps if p is not leader]


def start_replicas(cluster, kubernetes_config, proxy, idle: float, n: int = 2, **kw) -> list:
    """The Deployment at 0; `n` coordinated proxies (proxy-a, proxy-b, ...) with `idle` as
    idle_timeout, once they agree on a leader: [leader, followers...]."""
    cluster.scale(0)
    cluster.wait_no_pods()
    ps = [proxy(coordinated(kubernetes_config, cluster, f"proxy-{chr(ord('a') + i)}", f"{idle:g}s", **kw))
          for i in range(n)]
    return settled(ps)


def scale_downs(p) -> list[dict]:
    """The proxy's own transitions to `stopping`."""
    return [e for e in p.events("backend state") if e["to"] == "stopping"]
