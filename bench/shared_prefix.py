#!/usr/bin/python3
"""A shared-prefix workload on 4 simulated vLLM pods (issue 18): round robin against the proxy's
`least_outstanding` and `prefix` routing, side by side in one run, on the real test control plane
(test/support/k8s: kube-apiserver and kube-controller-manager 1.20, the test kubelet running each
pod of the vLLM Deployment as a vllm-sim on its own 127.0.0.x, the real EndpointSlice controller).

The workload: --prompts distinct system prompts of --words words each (a word is one token to
vllm-sim), and --clients concurrent users, each sending one request after the other: a system
prompt drawn by --dist (Zipf with exponent --zipf-s, the hot prompt itself drawn at random, or
uniform) and a short user message of its own, streamed, --max-tokens tokens. The same sequence of
requests (from --seed) is sent under every policy. Each pod is a vllm-sim whose prefix cache
(`--prefix-cache-blocks`) holds --cache-prompts system prompts (fewer than --prompts: one pod
cannot hold them all, the pods together can; a list, e.g. 5,8, runs every policy at each size),
with --prefill-per-token for every prompt token it misses and --itl between tokens.

Policies, one after the other, each on 4 fresh pods (the Deployment scaled to 0, its vLLM
container's args set, and back to 4, so every prefix cache starts empty):
  round_robin        the clients send straight to the 4 pods' addresses in turn, request by
                     request: what a Service spreading connections does at best (the baseline)
  least_outstanding  through the proxy, `routing: least_outstanding` (pods from the EndpointSlices)
  prefix             through the proxy, `routing: prefix`

Per policy: requests answered, mean and p90 TTFT (client-measured: request written → first event
with content), the prefix cache's hit rate (Σ vllm:prefix_cache_hits_total / Σ
vllm:prefix_cache_queries_total over the pods, in tokens, as vLLM counts it) and requests per pod
(vllm:request_success_total). For `prefix`, after the run, one request per system prompt alone
finds each prompt's home pod on the ring: how many prompts and requests each pod is home to, and a
lower bound of the requests the bound (1.25 × the mean in flight) sent elsewhere. Uses the release
build unless VA_BIN_DIR says otherwise; needs the control plane built (scripts/setup does it).
About 45 s; --rounds 3 (every cache size and policy three times, interleaved; TTFTs pooled)
about 110 s; --quick (120 requests per policy, the first cache size only) about 25 s.

    /usr/bin/python3 bench/shared_prefix.py [--rounds 3] [--requests 800] [--clients 32] [--dist zipf] [--cache-prompts 5,8] [--json out.json]
    /usr/bin/python3 bench/shared_prefix.py --quick
"""

import argparse
import asyncio
import json
import math
import os
import pathlib
import platform
import random
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("VA_BIN_DIR", str(ROOT / "build" / "release" / "bin"))
sys.path.insert(0, str(ROOT / "test" / "support"))

from k8s.cluster import Cluster, ControlPlane, apply_deploy, service_account_kubeconfig  # noqa: E402
from k8s.kubelet import Kubelet  # noqa: E402
from proxy import config_yaml, kubernetes_backend_yaml, start_proxy  # noqa: E402
from support import BIN_DIR, eventually, free_port, metrics, wait_port  # noqa: E402

MODEL = "sim-model"
PODS = 4
POLICIES = ("round_robin", "least_outstanding", "prefix")
NAMESPACE = "llm"
# Words of the system prompts: lowercase pseudo-words, so the text looks like prose to a tokenizer
# and its bytes differ from the first one (the prefix routing key is the first 1024 bytes).
SYLLABLES = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "dor", "ni", "pa", "qua", "ris", "te", "um"]


# --- the workload ---

def system_prompts(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = [f"You are assistant {i} of the {rng.choice(['blue', 'green', 'red'])} team."]
        while len(text) < words:  # each entry one word (one sim token) from here on
            text.append("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))))
        out.append(" ".join(" ".join(text).split()[:words]))
    return out


def workload(n_requests: int, n_prompts: int, dist: str, zipf_s: float, seed: int) -> list[tuple[int, str]]:
    """(system prompt index, user message) per request, in the order they are handed out."""
    rng = random.Random(seed + 1)
    weights = ([1.0 / (k + 1) ** zipf_s for k in range(n_prompts)] if dist == "zipf"
               else [1.0] * n_prompts)
    # Which prompt is hot is itself random: not always prompt 0.
    order = list(range(n_prompts))
    rng.shuffle(order)
    picks = rng.choices(order, weights=weights, k=n_requests)
    return [(p, f"User {i} asks: what is {rng.randint(2, 99)} times {rng.randint(2, 99)}?")
            for i, p in enumerate(picks)]


def body(system: str, user: str, max_tokens: int) -> bytes:
    return json.dumps({"model": MODEL, "stream": True, "max_tokens": max_tokens,
                       "messages": [{"role": "system", "content": system},
                                    {"role": "user", "content": user}]},
                      separators=(",", ":")).encode()


# --- the client ---

class Conn:
    """One keep-alive HTTP/1.1 connection; `stream()` posts a streamed chat completion on it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def stream(self, data: bytes) -> tuple[float, int]:
        """(TTFT in seconds: request written → first event with content, events read)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(data), data))
        t0 = time.perf_counter()
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200" or b"chunked" not in head.lower():
            raise RuntimeError(f"{self.host}:{self.port}: {head[:200]!r}")
        ttft, events, done, buf = None, 0, False, b""
        while True:  # chunked body: size line, data, CRLF; a 0 size ends it
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                break
            buf += (await self.reader.readexactly(size + 2))[:-2]
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                events += 1
                if b"[DONE]" in event:
                    done = True
                elif ttft is None and b'"content":"' in event and b'"content":""' not in event:
                    ttft = time.perf_counter() - t0
        if not done or ttft is None:
            raise RuntimeError(f"{self.host}:{self.port}: a stream without content or [DONE]")
        return ttft, events

    def close(self):
        if self.writer is not None:
            self.writer.close()


async def drive(targets: list[tuple[str, int]], requests: list[bytes], clients: int) -> dict:
    """`clients` users, each sending the next request of `requests` when its last one is done.
    With several targets, request k goes to targets[k % len]: round robin by request. Each user
    keeps a keep-alive connection per target."""
    ttfts = [None] * len(requests)
    next_k = 0
    errors = []

    async def user():
        nonlocal next_k
        conns = {t: Conn(*t) for t in targets}
        try:
            while next_k < len(requests):
                k = next_k
                next_k += 1
                conn = conns[targets[k % len(targets)]]
                try:
                    ttfts[k], _ = await conn.stream(requests[k])
                except (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError) as e:
                    errors.append(repr(e))
                    conn.close()
                    conns[conn.host, conn.port] = Conn(conn.host, conn.port)
        finally:
            for c in conns.values():
                c.close()

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(clients)))
    took = time.perf_counter() - started
    done = [t for t in ttfts if t is not None]
    return {"ttfts": done, "errors": errors, "seconds": took}


# --- the pods ---

def pod_metrics(kubelet: Kubelet) -> dict[str, dict[str, float]]:
    """Per ready pod (by address): the sim's counters this bench reads."""
    names = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
             "vllm:request_success_total", "vllm:prompt_tokens_total")
    out = {}
    for addr, port in kubelet.endpoints():
        m = metrics(f"http://{addr}:{port}/metrics")
        out[addr] = {n: sum(v for k, v in m.items() if k == n or k.startswith(n + "{")) for n in names}
    return out


def fresh_pods(cluster: Cluster, sim_args: list[str]) -> list[tuple[str, int]]:
    """The Deployment at 0 (every sim and its cache gone), its vLLM container's args set to
    `sim_args`, then at PODS again; waits for PODS ready pods and returns their addresses."""
    cluster.scale(0)
    cluster.wait_no_pods()
    status, obj = cluster.control_plane.api(
        "PATCH", f"/apis/apps/v1/namespaces/{cluster.namespace}/deployments/{cluster.deployment_name}",
        [{"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": sim_args}],
        content_type="application/json-patch+json")
    assert status == 200, obj
    cluster.scale(PODS)
    return eventually(lambda: len(cluster.kubelet.endpoints()) == PODS and cluster.kubelet.endpoints(),
                      60, f"{PODS} ready pods")


def start_routing_proxy(cluster: Cluster, routing: str):
    backend = kubernetes_backend_yaml(
        "vllm", cluster.kubelet.service_url, [MODEL], namespace=cluster.namespace,
        deployment=cluster.deployment_name, kubeconfig=cluster.proxy_kubeconfig, replicas=PODS,
        idle="600s", scaler="      service: vllm\n",
        extra=f"    routing: {routing}\n    health: {{ interval: 250ms }}\n")
    # Ports of our own, so that the log can stay at warn (info writes a line per request).
    port, admin = free_port(), free_port()
    p = start_proxy(config_yaml(backend, top=f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\n"
                                             "log: {level: warn}\n"), wait=False)
    p.port, p.admin_port = port, admin
    p.url, p.admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
    try:
        wait_port(admin, timeout=15)
        def routed():
            b = p.status()["backends"][0]
            return b["state"] == "ready" and len(b.get("pods") or []) == PODS
        eventually(routed, 30, f"the proxy routing to {PODS} pods (backends[0].pods in /status; "
                               "an empty list means the EndpointSlice watch is not wired into routing)")
    except BaseException:
        p.stop()
        raise
    return p


def homes(cluster: Cluster, port: int, probes: list[bytes]) -> list[str]:
    """The pod (address) each probe goes to when it is the only request: for `prefix`, the home
    of each system prompt on the ring, which the bound may make a request under load spill from."""
    out = []
    for data in probes:
        before = pod_metrics(cluster.kubelet)
        asyncio.run(drive([("127.0.0.1", port)], [data], 1))
        after = pod_metrics(cluster.kubelet)
        out.append(next(a for a in after if after[a]["vllm:request_success_total"]
                        > before[a]["vllm:request_success_total"]))
    return out


def run_policy(cluster: Cluster, sim_args: list[str], policy: str, requests: list[bytes], clients: int,
               picks: list[int], probes: list[bytes]) -> dict:
    """One policy on fresh pods. `picks`: the system prompt of each request; `probes`: one request
    per system prompt, sent one at a time after the run to find each one's home pod (prefix)."""
    pods = fresh_pods(cluster, sim_args)
    home = None
    proxy = None
    try:
        if policy == "round_robin":
            targets = pods
        else:
            proxy = start_routing_proxy(cluster, policy)
            targets = [("127.0.0.1", proxy.port)]
        before = pod_metrics(cluster.kubelet)
        result = asyncio.run(drive(targets, requests, clients))
        after = pod_metrics(cluster.kubelet)
        status = proxy.status()["backends"][0] if proxy else None
        if policy == "prefix":
            home = homes(cluster, proxy.port, probes)
    finally:
        if proxy:
            proxy.stop()
    assert sorted(before) == sorted(after), f"the pods changed during the run: {before} {after}"

    def delta(name):
        return {a: after[a][name] - before[a][name] for a in sorted(after)}

    queries = sum(delta("vllm:prefix_cache_queries_total").values())
    hits = sum(delta("vllm:prefix_cache_hits_total").values())
    ttfts = sorted(t * 1000 for t in result["ttfts"])
    per_pod = delta("vllm:request_success_total")
    return {
        "policy": policy,
        "requests": len(ttfts),
        "errors": len(result["errors"]),
        "error_samples": result["errors"][:3],
        "seconds": round(result["seconds"], 2),
        "ttft_mean_ms": round(statistics.fmean(ttfts), 1) if ttfts else None,
        "ttft_p50_ms": round(percentile(ttfts, 50), 1) if ttfts else None,
        "ttft_p90_ms": round(percentile(ttfts, 90), 1) if ttfts else None,
        "ttft_p99_ms": round(percentile(ttfts, 99), 1) if ttfts else None,
        "cache_hit_rate": round(hits / queries, 3) if queries else None,
        "cache_hits": int(hits),
        "cache_queries": int(queries),
        "prompt_tokens": int(sum(delta("vllm:prompt_tokens_total").values())),
        "requests_per_pod": sorted((int(v) for v in per_pod.values()), reverse=True),
        "pods_routed_to": len(status["pods"]) if status else PODS,
        **(spill(home, picks, per_pod) if home else {}),
        "_ttfts": ttfts,
    }


def spill(home: list[str], picks: list[int], served: dict[str, float]) -> dict:
    """Where the prefix ring puts the system prompts, and how many requests went elsewhere: the
    requests each pod would have had with every one at its prompt's home, against those it
    answered (a lower bound of the spill: a pod may take spill and give some of its own away)."""
    wanted = {a: 0 for a in served}
    for p in picks:
        wanted[home[p]] += 1
    return {
        "prompts_per_home_pod": sorted((home.count(a) for a in served), reverse=True),
        "home_requests_per_pod": sorted(wanted.values(), reverse=True),
        "spilled_at_least": int(sum(max(0, wanted[a] - served[a]) for a in served)),
    }


def summarize(cache: float, policy: str, rounds: list[dict]) -> dict:
    """One (cache size, policy) over its rounds: the TTFTs of every round pooled, the cache's hits
    over its queries, the requests per pod summed (each round's sorted from most to fewest), and
    each round's own figures to show how far they spread."""
    ttfts = sorted(t for r in rounds for t in r["_ttfts"])
    queries = sum(r["cache_queries"] for r in rounds)
    row = {
        "cache_prompts": cache,
        "policy": policy,
        "rounds": len(rounds),
        "requests": len(ttfts),
        "errors": sum(r["errors"] for r in rounds),
        "ttft_mean_ms": round(statistics.fmean(ttfts), 1) if ttfts else None,
        "ttft_p50_ms": round(percentile(ttfts, 50), 1) if ttfts else None,
        "ttft_p90_ms": round(percentile(ttfts, 90), 1) if ttfts else None,
        "ttft_p99_ms": round(percentile(ttfts, 99), 1) if ttfts else None,
        "cache_hit_rate": round(sum(r["cache_hits"] for r in rounds) / queries, 3) if queries else None,
        "requests_per_pod": [sum(c) for c in zip(*(r["requests_per_pod"] for r in rounds))],
        "per_round": [{k: v for k, v in r.items() if k != "_ttfts"} for r in rounds],
    }
    if rounds and "spilled_at_least" in rounds[0]:
        row["prompts_per_home_pod"] = rounds[0]["prompts_per_home_pod"]
        row["home_requests_per_pod"] = rounds[0]["home_requests_per_pod"]
        row["spilled_at_least"] = [r["spilled_at_least"] for r in rounds]
    return row


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


# --- the report ---

def spread(values: list, fmt) -> str:
    """` (min–max)` of the rounds' values, or nothing with one round."""
    values = [v for v in values if v is not None]
    return f" ({fmt(min(values))}–{fmt(max(values))})" if len(values) > 1 else ""


def table(rows: list[dict]) -> str:
    out = ["| cache per pod | policy | requests | TTFT mean (ms) | TTFT p90 (ms) | cache-hit rate | requests per pod |",
           "|---|---|---|---|---|---|---|"]
    pct = lambda v: f"{v * 100:.0f} %"  # noqa: E731
    num = lambda v: f"{v:g}"  # noqa: E731
    for r in rows:
        per = r["per_round"]
        errors = f" ({r['errors']} failed)" if r["errors"] else ""
        hit = "—" if r["cache_hit_rate"] is None else pct(r["cache_hit_rate"]) + spread(
            [x["cache_hit_rate"] for x in per], lambda v: f"{v * 100:.0f}")
        out.append(f"| {r['cache_prompts']:g} prompts | {r['policy']} | {r['requests']}{errors} | "
                   f"{r['ttft_mean_ms']}{spread([x['ttft_mean_ms'] for x in per], num)} | "
                   f"{r['ttft_p90_ms']}{spread([x['ttft_p90_ms'] for x in per], num)} | {hit} | "
                   f"{' / '.join(map(str, r['requests_per_pod']))} |")
    return "\n".join(out)


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.machine())
    return {"cpu_model": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--requests", type=int, default=800, help="requests per policy")
    ap.add_argument("--clients", type=int, default=32, help="concurrent users")
    ap.add_argument("--prompts", type=int, default=16, help="distinct system prompts")
    ap.add_argument("--words", type=int, default=600, help="words (sim tokens) per system prompt")
    ap.add_argument("--dist", choices=("zipf", "uniform"), default="zipf")
    ap.add_argument("--zipf-s", type=float, default=1.0)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--itl", default="10ms")
    ap.add_argument("--ttft", default="0ms", help="vllm-sim's base TTFT, before the prefill")
    ap.add_argument("--prefill-per-token", default="100us")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--cache-prompts", default="5,8",
                    help="a pod's prefix cache holds this many system prompts (--prefix-cache-blocks); "
                         "a list runs every policy at each size")
    ap.add_argument("--rounds", type=int, default=1, help="every cache size and policy, so many times")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--quick", action="store_true",
                    help="120 requests per policy, the first cache size only: a first look")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.quick:
        args.requests = 120
        args.cache_prompts = args.cache_prompts.split(",")[0]
    policies = args.policies.split(",")
    caches = [float(c) for c in args.cache_prompts.split(",")]
    unknown = set(policies) - set(POLICIES)
    if unknown:
        ap.error(f"unknown policies {sorted(unknown)}; known: {', '.join(POLICIES)}")

    # The blocks of one system prompt as the sim keys them: its full blocks, and the one where it
    # ends and the user message begins, which is each request's own (a pod's cache holds it too
    # until it is evicted).
    prompt_blocks = args.words // args.block_size + 1

    def sim_args(cache_prompts: float) -> list[str]:
        return ["--model", MODEL, "--disable-access-log", "--ttft", args.ttft, "--itl", args.itl,
                "--block-size", str(args.block_size),
                "--prefix-cache-blocks", str(int(cache_prompts * prompt_blocks)),
                "--prefill-per-token", args.prefill_per_token]

    systems = system_prompts(args.prompts, args.words, args.seed)
    work = workload(args.requests, args.prompts, args.dist, args.zipf_s, args.seed)
    picks = [p for p, _ in work]
    requests = [body(systems[p], user, args.max_tokens) for p, user in work]
    probes = [body(s, "Hello.", 1) for s in systems]
    counts = [picks.count(i) for i in range(args.prompts)]
    print(f"{args.requests} requests per policy, {args.clients} clients; {args.prompts} system prompts of "
          f"{args.words} words ({min(map(len, systems))}-{max(map(len, systems))} characters), "
          f"{args.dist}{f' s={args.zipf_s:g}' if args.dist == 'zipf' else ''}: requests per prompt "
          f"{sorted(counts, reverse=True)}", file=sys.stderr, flush=True)

    load_start = os.getloadavg()
    started = time.monotonic()
    runs: dict[tuple[float, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="va-prefix-bench-") as tmp:
        cp = ControlPlane().start(pathlib.Path(tmp) / "cp")
        kl = None
        try:
            deploy = apply_deploy(cp, NAMESPACE, sim_args=sim_args(caches[0]))
            kl = Kubelet(cp.dir, deploy.namespace, deploy.selector, BIN_DIR / "vllm-sim",
                         probe_period=0.2, service_proxy=True, log_dir=pathlib.Path(tmp) / "kubelet").start()
            cluster = Cluster(cp, deploy, kl, service_account_kubeconfig(cp, deploy.namespace))
            # Round by round, every cache size and policy in each: a change in the machine's load
            # falls on all of them alike.
            for n in range(args.rounds):
                for cache in caches:
                    for policy in policies:
                        t = time.monotonic()
                        row = run_policy(cluster, sim_args(cache), policy, requests, args.clients, picks, probes)
                        runs.setdefault((cache, policy), []).append({"round": n + 1, **row})
                        print(f"round {n + 1}, cache {cache:g}, {policy}: {row['requests']} requests in "
                              f"{row['seconds']} s ({time.monotonic() - t:.1f} s with the pods' restart)",
                              file=sys.stderr, flush=True)
            cluster.scale(0)
            cluster.wait_no_pods()
        finally:
            if kl:
                kl.stop()
            cp.stop()
    took = time.monotonic() - started
    rows = [{**summarize(cache, policy, runs[cache, policy]), "prefix_cache_blocks": int(cache * prompt_blocks)}
            for cache in caches for policy in policies]

    command = ("/usr/bin/python3 bench/shared_prefix.py " + " ".join(sys.argv[1:])).strip()
    m = machine()
    blocks = ", ".join(f"{int(c * prompt_blocks)} (≈ {c:g} system prompts)" for c in caches)
    print(f"`{command}`: {args.requests} requests per policy ({args.clients} users at once), "
          f"{args.prompts} system prompts of {args.words} tokens, {args.dist}"
          f"{f' (s={args.zipf_s:g})' if args.dist == 'zipf' else ''}: requests per prompt "
          f"{' / '.join(map(str, sorted(counts, reverse=True)))}; each request one of them + a "
          f"{len(work[0][1].split())}-word user message, streamed, {args.max_tokens} tokens.")
    print(f"{PODS} vllm-sim pods: `--block-size {args.block_size} --prefill-per-token {args.prefill_per_token} "
          f"--ttft {args.ttft} --itl {args.itl}`, `--prefix-cache-blocks` {blocks}; every policy on fresh pods "
          f"(empty caches).")
    print(f"{args.rounds} round{'s' if args.rounds > 1 else ''}: TTFT and hit rate over every round's requests"
          f"{', (min–max) of the rounds' if args.rounds > 1 else ''}; requests per pod summed.")
    print(f"{m['cpu_model']}, {m['cpus']} CPUs; load average {load_start[0]:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end; {took:.0f} s in all.\n")
    print(table(rows))
    for r in rows:
        if "prompts_per_home_pod" in r:
            spilled = r["spilled_at_least"]
            print(f"\ncache {r['cache_prompts']:g}, prefix: the ring's home pods have "
                  f"{' / '.join(map(str, r['prompts_per_home_pod']))} of the {args.prompts} system prompts, "
                  f"{' / '.join(map(str, r['home_requests_per_pod']))} of the requests; at least "
                  f"{' / '.join(map(str, spilled))} requests "
                  f"({sum(spilled) / max(r['requests'], 1) * 100:.0f} %) went to another pod "
                  f"(the bound: 1.25 × the mean in flight)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({
            "command": command, "params": {**vars(args), "requests_per_prompt": counts},
            "machine": {**m, "load_start": load_start, "load_end": os.getloadavg()},
            "seconds": round(took, 1), "rows": rows}, indent=2))
    failed = [(x["policy"], x["error_samples"]) for r in rows for x in r["per_round"] if x["errors"]]
    if failed:
        print(f"\nfailed requests: {failed}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
