#!/usr/bin/python3
"""Cold start through a real Kubernetes control plane (test/support/k8s): N requests to a proxy whose
`kubernetes` scaler finds the vLLM Deployment at 0.

Per N it reports, from the proxy's log and the clients' clocks:
  request → PATCH   first request sent → the Scale PATCH answered (`kubernetes scale`)
  PATCH → ready     the controllers create the ReplicaSet and pod, the test kubelet starts vllm-sim
                    (`--startup-delay`), probes it every --probe-period s and marks the pod Ready,
                    the Deployment's readyReplicas reaches the proxy's watch, and the proxy's own
                    health probe through the Service answers 200 (`to=ready`)
  ready → first byte, → last client's first byte: the proxy's own share of releasing the requests
  and, beside it, the same N requests sent at once straight to the Service once it is ready.
Uses the release build unless VA_BIN_DIR says otherwise; needs the control plane built
(scripts/setup does it).

    /usr/bin/python3 bench/k8s_cold_start.py [--delay 2s] [--counts 1,100] [--json out.json]
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
from k8s.cluster import Cluster, ControlPlane, apply_deploy, service_account_kubeconfig  # noqa: E402
from k8s.kubelet import Kubelet  # noqa: E402
from proxy import config_yaml, kubernetes_backend_yaml, start_proxy  # noqa: E402
from support import BIN_DIR  # noqa: E402


async def run(cluster, n):
    cluster.scale(0)
    cluster.wait_no_pods()
    backend = kubernetes_backend_yaml(
        "sim", cluster.kubelet.service_url, ["sim-model"], namespace=cluster.namespace,
        deployment=cluster.deployment_name, kubeconfig=cluster.proxy_kubeconfig, wake="120s",
        extra=f"    max_pending: {max(n, 1000)}\n")
    p = start_proxy(config_yaml(backend, top="log: {level: info}\nlimits: {max_connections: 20000}"))
    try:
        time.sleep(0.5)  # the proxy's first lists
        t0 = time.time()
        results = await asyncio.gather(*(one_request(p.port) for _ in range(n)))
        lines = p.log_lines()
        t_patch = proxy_time(next(l for l in lines if l.get("msg") == "kubernetes scale"))
        t_ready = proxy_time(next(l for l in lines if l.get("msg") == "backend state"
                                  and l.get("to") == "ready"))
        firsts = sorted(r[0] for r in results)
        t1 = time.time()
        direct = sorted(r[0] for r in await asyncio.gather(
            *(one_request(cluster.kubelet.service_port) for _ in range(n))))
        return {
            "held_requests": n,
            "answered_200": sum(1 for r in results if r[1] == b"200"),
            "request_to_patch_ms": round((t_patch - t0) * 1000, 1),
            "patch_to_ready_s": round(t_ready - t_patch, 3),
            **release_figures(firsts, t_ready, direct, t1),
        }
    finally:
        p.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", default="2s", help="vllm-sim --startup-delay (the model load)")
    ap.add_argument("--probe-period", type=float, default=1.0, help="the test kubelet's readiness probe period")
    ap.add_argument("--counts", default="1,100")
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
            rows = [asyncio.run(run(cluster, int(n))) for n in args.counts.split(",")]
        finally:
            if kl:
                kl.stop()
            cp.stop()
    print(f"vllm-sim --startup-delay {args.delay}; test kubelet readiness probe every {args.probe_period} s")
    report(rows, [("request → PATCH (ms)", "request_to_patch_ms"),
                  ("PATCH → ready (s)", "patch_to_ready_s")], "the Service", args.json)

if __name__ == "__main__":
    main()
