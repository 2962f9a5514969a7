#!/usr/bin/python3
"""Cold start through a real Kubernetes control plane (test/support/k8s): N requests to a proxy whose
`kubernetes` scaler finds the vLLM Deployment at 0, and the same through several proxy replicas.

Per N and per count of proxy replicas (--replicas; 1 is one proxy with no coordination, more are as
many proxy processes coordinated through Leases, `coordination: {type: kubernetes}`, waited for until
each sees one leader and every replica live; the N requests go round-robin over them, all at once)
it reports, from the proxies' logs and the clients' clocks:
  request → PATCH   first request sent → the first Scale PATCH answered (`kubernetes scale`) among
                    the replicas, and how many replicas PATCHed
  PATCH → ready     the controllers create the ReplicaSet and pod, the test kubelet starts vllm-sim
                    (`--startup-delay`), probes it every --probe-period s and marks the pod Ready,
                    the Deployment's readyReplicas reaches the proxy's watch, and the proxy's own
                    health probe through the Service answers 200 (`to=ready`; with several
                    replicas, the first of them; "ready spread" is how much later the last one
                    that held requests got there)
  ready → first byte, → last client's first byte: the proxy's own share of releasing the requests,
  each client's first byte against the `to=ready` of the replica it went through; beside it, the
  same N requests sent at once straight to the Service once it is ready.
Uses the release build unless VA_BIN_DIR says otherwise; needs the control plane built
(scripts/setup does it).

    /usr/bin/python3 bench/k8s_cold_start.py [--delay 2s] [--counts 1,100] [--replicas 1,3] [--json out.json]
"""

import argparse
import asyncio
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("VA_BIN_DIR", str(ROOT / "build" / "release" / "bin"))
sys.path.insert(0, str(ROOT / "test" / "support"))
sys.path.insert(0, str(ROOT / "bench"))

from cold_start import one_request, proxy_time, release_figures, report  # noqa: E402
from coordination import coordination_yaml, settled  # noqa: E402
from k8s.cluster import Cluster, ControlPlane, apply_deploy, service_account_kubeconfig  # noqa: E402
from k8s.kubelet import Kubelet  # noqa: E402
from proxy import config_yaml, kubernetes_backend_yaml, start_proxy  # noqa: E402
from support import BIN_DIR  # noqa: E402

LEASE, BEAT = 3.0, 0.5  # lease_duration and heartbeat_interval (s), as test/kubernetes/ha.py


def first_time(lines, msg, **fields):
    """The time of the first log line with `msg` and `fields`, or None."""
    return next((proxy_time(l) for l in lines
                 if l.get("msg") == msg and all(l.get(k) == v for k, v in fields.items())), None)


async def run(cluster, n, replicas, lease_name):
    cluster.scale(0)
    cluster.wait_no_pods()
    backend = kubernetes_backend_yaml(
        "sim", cluster.kubelet.service_url, ["sim-model"], namespace=cluster.namespace,
        deployment=cluster.deployment_name, kubeconfig=cluster.proxy_kubeconfig, wake="120s",
        extra=f"    max_pending: {max(n, 1000)}\n")
    top = "log: {level: info}\nlimits: {max_connections: 20000}\n"
    ps = []
    try:
        for i in range(replicas):
            # One proxy decides alone, as today; several coordinate, proxy-a, proxy-b, ...
            coordination = "" if replicas == 1 else coordination_yaml(
                cluster, f"proxy-{chr(ord('a') + i)}", lease_name, LEASE, BEAT)
            ps.append(start_proxy(config_yaml(backend, top=top + coordination)))
        if replicas > 1:
            settled(ps)
        time.sleep(0.5)  # the proxies' first lists
        via = [i % replicas for i in range(n)]  # the replica each request goes through
        t0 = time.time()
        results = await asyncio.gather(*(one_request(ps[v].port) for v in via))
        logs = [p.log_lines() for p in ps]
        patches = [t for t in (first_time(lines, "kubernetes scale") for lines in logs) if t is not None]
        ready = {v: first_time(logs[v], "backend state", to="ready") for v in set(via)}
        assert patches and None not in ready.values(), f"no PATCH or no to=ready: {patches} {ready}"
        t1 = time.time()
        direct = [r[0] for r in await asyncio.gather(
            *(one_request(cluster.kubelet.service_port) for _ in range(n)))]
        return {
            "held_requests": n,
            "replicas": replicas,
            "answered_200": sum(1 for r in results if r[1] == b"200"),
            "patched": len(patches),
            "request_to_patch_ms": round((min(patches) - t0) * 1000, 1),
            "patch_to_ready_s": round(min(ready.values()) - min(patches), 3),
            "ready_spread_ms": round((max(ready.values()) - min(ready.values())) * 1000, 1),
            **release_figures([r[0] for r in results], [ready[v] for v in via], direct, t1),
        }
    finally:
        for p in ps:
            p.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", default="2s", help="vllm-sim --startup-delay (the model load)")
    ap.add_argument("--probe-period", type=float, default=1.0, help="the test kubelet's readiness probe period")
    ap.add_argument("--counts", default="1,100")
    ap.add_argument("--replicas", default="1,3", help="counts of proxy replicas; more than 1 coordinate")
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="va-k8s-bench-") as tmp:
        cp = ControlPlane().start(pathlib.Path(tmp) / "cp")
        kl = None
        try:
            deploy = apply_deploy(cp, "llm", sim_args=["--model", "sim-model", "--startup-delay", args.delay,
                                                       "--disable-access-log"])
            kl = Kubelet(cp.dir, deploy.namespace, deploy.selector, BIN_DIR / "vllm-sim",
                         probe_period=args.probe_period, service_proxy=True).start()
            cluster = Cluster(cp, deploy, kl, service_account_kubeconfig(cp, deploy.namespace))
            # Per N, the replica counts one after another: their rows compare directly.
            rows = [asyncio.run(run(cluster, int(n), int(r), f"bench-{os.getpid()}-{i}-{r}"))
                    for i, n in enumerate(args.counts.split(",")) for r in args.replicas.split(",")]
        finally:
            if kl:
                kl.stop()
            cp.stop()
    print(f"vllm-sim --startup-delay {args.delay}; test kubelet readiness probe every {args.probe_period} s")
    print(f"several replicas: coordination through Leases, lease_duration {LEASE:g} s, heartbeat {BEAT:g} s")
    report(rows, [("proxy replicas", "replicas"), ("replicas that PATCHed", "patched"),
                  ("request → PATCH (ms)", "request_to_patch_ms"),
                  ("PATCH → ready (s)", "patch_to_ready_s"), ("ready spread (ms)", "ready_spread_ms")],
           "the Service", args.json)

if __name__ == "__main__":
    main()
