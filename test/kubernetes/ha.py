"""Several coordinated proxy processes on the real control plane, for test_ha*.py: their configs,
what their /status and /metrics say about coordination, and the wait for them to agree on a leader
(the last two and the `coordination:` section from test/support/coordination.py, which
bench/k8s_cold_start.py shares)."""

import os

from conftest import MODEL
import coordination as coord
from support import chat, metrics

CHAT = chat(model=MODEL)
LEASE, BEAT = 3.0, 0.5  # lease_duration and heartbeat_interval, in seconds, unless a test says
coordination, settled = coord.coordination, coord.settled  # test/support/coordination.py


def coordinated(kubernetes_config, cluster, identity: str, idle: str, lease: float = LEASE, beat: float = BEAT,
                top: str = "", **backend) -> str:
    """A proxy config with coordination through the Leases of this test process's group; `backend`
    keywords as kubernetes_config's (replicas, scaler, ...)."""
    top += coord.coordination_yaml(cluster, identity, f"va-{os.getpid()}", lease, beat)
    return kubernetes_config(idle=idle, wake="60s", top=top,
                             extra="    health: { interval: 250ms }\n", **backend)


def replicas(cluster) -> int:
    return cluster.deployment()["spec"].get("replicas", 0)


def lease_writes(p) -> float:
    m = metrics(p.admin_url)
    return sum(v for k, v in m.items() if k.startswith("vllm_autoscaler_coordination_lease_writes_total"))


def start_replicas(cluster, kubernetes_config, proxy, idle: float, n: int = 2, **kw) -> list:
    """The Deployment at 0; `n` coordinated proxies (proxy-a, proxy-b, ...) with `idle` as
    idle_timeout, once they agree on a leader: [leader, followers...]."""
    cluster.scale(0)
    cluster.wait_no_pods()
    ps = [proxy(coordinated(kubernetes_config, cluster, f"proxy-{chr(ord('a') + i)}", f"{round(idle * 1000)}ms", **kw))
          for i in range(n)]
    return settled(ps)


def scale_downs(p) -> list[dict]:
    """The proxy's own transitions to `stopping`."""
    return [e for e in p.events("backend state") if e["to"] == "stopping"]
