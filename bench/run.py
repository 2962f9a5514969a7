#!/usr/bin/python3
"""vllm-autoscaler against nginx and HAProxy, side by side in one run on this machine.

    bench/run [--quick | --smoke] [--scenarios 1,2,3,4,5] [--rounds N] [--out DIR] [--readme]

Scenarios: 1 steady-state overhead (wrk), 2 SSE streaming, 3 cold start (bench/cold_start.py),
4 memory, 5 growth with open keep-alive connections. Candidates run interleaved, round by round;
every table shows the median and the spread over the rounds. Writes <out>/<name>.json (every
round) and <out>/<name>.md (the tables); <name> is `latest` for the full run, `quick` or `smoke`
otherwise; <out> is bench/results unless --out says otherwise. --readme puts the headline table
into README.md. bench/README.md says what each scenario measures and how.

Uses the release build (build/release/bin) unless VA_BIN_DIR says otherwise; needs nginx, haproxy
and wrk (scripts/setup installs them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import pathlib
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("VA_BIN_DIR", str(ROOT / "build" / "release" / "bin"))
sys.path.insert(0, str(ROOT / "test" / "support"))
sys.path.insert(0, str(ROOT / "bench"))

import candidates as cands  # noqa: E402
import clients  # noqa: E402
import cold_start  # noqa: E402
import report  # noqa: E402
from candidates import CANDIDATES, LABELS, PROXIES  # noqa: E402
from support import BIN_DIR, eventually, free_port, metrics, sanitizer_reports  # noqa: E402

# Per profile: rounds, durations and sizes of each scenario. The full run takes about 7 minutes
# on a 2-core machine; quick about a minute; smoke (the test suite's) under 15 s.
PROFILES = {
    "full": dict(
        s1_conns=[1, 32, 256], s1_rounds=3, s1_duration=4, s1_warmup=1,
        s2_rounds=10, s2_events=200, s2_itl="1ms",
        s3_counts=[1, 100, 1000], s3_rounds=3, s3_delay="2s",
        s4_rounds=3, s4_held=1000, s4_body_bytes=4096, s4_idle_wait=1.0,
        s5_conns=[10, 100, 1000, 5000], s5_rounds=3, s5_duration=2, s5_load_conns=4,
        settle=0.3,
    ),
    "quick": dict(
        s1_conns=[1, 32, 256], s1_rounds=1, s1_duration=1, s1_warmup=1,
        s2_rounds=3, s2_events=200, s2_itl="1ms",
        s3_counts=[1, 100], s3_rounds=1, s3_delay="1s",
        s4_rounds=1, s4_held=1000, s4_body_bytes=4096, s4_idle_wait=1.0,
        s5_conns=[10, 100, 1000, 5000], s5_rounds=1, s5_duration=1, s5_load_conns=4,
        settle=0.3,
    ),
    "smoke": dict(
        s1_conns=[256], s1_rounds=1, s1_duration=1, s1_warmup=0,
        s2_rounds=1, s2_events=50, s2_itl="1ms",
        s3_counts=[1], s3_rounds=1, s3_delay="200ms",
        s4_rounds=1, s4_held=100, s4_body_bytes=4096, s4_idle_wait=0.2,
        s5_conns=[10], s5_rounds=1, s5_duration=1, s5_load_conns=4,
        settle=0.05,
    ),
}
RESULT_NAMES = {"full": "latest", "quick": "quick", "smoke": "smoke"}
SCENARIOS = {1: "overhead", 2: "streaming", 3: "cold_start", 4: "memory", 5: "growth"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Layout:
    """Which CPUs run what. With two CPUs or more: the load side (wrk, the SSE and connection
    clients, this harness, the backend) on the first, the candidate proxy on the second, so each
    proxy has a core of its own and the load side is the same for every candidate."""

    def __init__(self, pin: bool):
        cpus = sorted(os.sched_getaffinity(0))
        if pin and len(cpus) >= 2:
            self.load, self.proxy = {cpus[0]}, {cpus[1]}
            self.text = (f"load side (wrk, clients, harness, backend) on CPU {cpus[0]}, the proxy "
                         f"under test on CPU {cpus[1]} (taskset / sched_setaffinity).")
        else:
            self.load = self.proxy = None
            self.text = "not pinned" + ("" if pin else " (--no-pin)") + "."


@contextlib.contextmanager
def harness_on(cpus):
    """Runs this process's main thread (and the threads it starts) on `cpus` for a while."""
    before = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def started(*servers_or_dicts):
    """Stops every server given (or every value of a dict of servers), last first, on exit; then
    fails the run if one printed a sanitizer report (the smoke test also runs on the ASan+UBSan
    build, whose leak report comes at exit)."""
    try:
        yield
    finally:
        flat = []
        for s in servers_or_dicts:
            flat.extend(s.values() if isinstance(s, dict) else [s])
        for s in reversed(flat):
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001 - a failed stop must not hide the real error
                log(f"stopping {s.name}: {e}")
        reports = sanitizer_reports({s.name: s.output() for s in flat})
        if reports:
            raise RuntimeError("sanitizer report:\n" + "\n".join(reports))


def wrk_with_peak_rss(srv, conns: int, duration: float, script, L: Layout):
    """A wrk run against `srv` and the peak VmRSS (MiB) sampled meanwhile (None for a candidate
    without a process of its own: the direct backend)."""
    peak = [0.0]

    def sample():
        m = srv.memory()
        if m:
            peak[0] = max(peak[0], m["VmRSS"])

    w = clients.run_wrk(srv.port, conns, duration, script, L.load, sample if srv.proc else None)
    return w, peak[0] or None


# ---------------------------------------------------------------------------------------------
# 1. Steady-state overhead


def start_warmed(servers: dict, names, backend, L: Layout, script, conns: int,
                 seconds: float) -> None:
    """Starts each named candidate in front of `backend` into `servers` (which the caller stops,
    see started()), then warms each up with `seconds` of wrk at `conns` connections: connections,
    pools and allocator caches are made before the first measured round."""
    for name in names:
        servers[name] = cands.start_candidate(name, backend.port, L.proxy)
    if seconds:
        for name in names:
            clients.run_wrk(servers[name].port, conns, seconds, script, L.load)


def scenario_overhead(P: dict, L: Layout, work: pathlib.Path) -> dict:
    script = clients.write_wrk_script(work)
    backend = cands.start_nginx_backend(L.load)
    servers = {}
    with started(backend, servers):
        start_warmed(servers, CANDIDATES, backend, L, script, max(P["s1_conns"]), P["s1_warmup"])
        runs = {str(c): {name: [] for name in CANDIDATES} for c in P["s1_conns"]}
        for conns in P["s1_conns"]:
            for r in range(P["s1_rounds"]):
                for name in CANDIDATES:
                    srv = servers[name]
                    cpu0 = srv.cpu_seconds()
                    w, peak = wrk_with_peak_rss(srv, conns, P["s1_duration"], script, L)
                    w["rss_mib_max"] = peak
                    cpu = srv.cpu_seconds() - cpu0
                    w["cpu_us_per_request"] = (round(cpu * 1e6 / w["requests"], 2)
                                               if srv.proc and w["requests"] else None)
                    runs[str(conns)][name].append(w)
                    log(f"1 overhead  c={conns:<3} round {r + 1}/{P['s1_rounds']} "
                        f"{LABELS[name]:<15} {w['rps']:>9.0f} req/s  p50 {w['p50_us']} µs  "
                        f"p99 {w['p99_us']} µs  errors {w['errors']}")
        return {"runs": runs, "configs": {n: s.config for n, s in servers.items() if s.config},
                "backend_config": backend.config}


# ---------------------------------------------------------------------------------------------
# 2. Streaming


def scenario_streaming(P: dict, L: Layout) -> dict:
    sim = cands.start_sim_backend(L.load, "--event-timestamps", "--itl", P["s2_itl"],
                                  "--max-tokens", str(P["s2_events"]))
    servers = {}
    with started(sim, servers), harness_on(L.load):
        for name in CANDIDATES:
            servers[name] = cands.start_candidate(name, sim.port, L.proxy, sse=True)
        for name in CANDIDATES:  # warm-up: connections and pools
            clients.sse_stream(servers[name].port, P["s2_events"])
        runs = {name: [] for name in CANDIDATES}
        for r in range(P["s2_rounds"]):
            for name in CANDIDATES:
                res = clients.sse_stream(servers[name].port, P["s2_events"])
                lat = res["event_latency_us"]
                row = {"ttfb_us": round(res["ttfb_us"], 1), "events": len(lat),
                       "p50_us": round(report.pct(lat, 50), 1),
                       "p99_us": round(report.pct(lat, 99), 1),
                       "latencies_us": [round(x, 1) for x in lat]}
                runs[name].append(row)
                log(f"2 streaming round {r + 1}/{P['s2_rounds']} {LABELS[name]:<15} "
                    f"{row['events']} events  TTFB {row['ttfb_us']} µs  "
                    f"p50 {row['p50_us']} µs  p99 {row['p99_us']} µs")
                # One event per token plus the role event.
                if row["events"] < P["s2_events"]:
                    raise RuntimeError(f"{name}: {row['events']} timed events, expected "
                                       f"{P['s2_events'] + 1}")
        return {"runs": runs, "configs": {n: s.config for n, s in servers.items() if s.config}}


# ---------------------------------------------------------------------------------------------
# 3. Cold start


def scenario_cold_start(P: dict) -> dict:
    runs = {str(n): [] for n in P["s3_counts"]}
    for r in range(P["s3_rounds"]):
        for n in P["s3_counts"]:
            row = asyncio.run(cold_start.run(n, P["s3_delay"]))
            runs[str(n)].append(row)
            log(f"3 cold start round {r + 1}/{P['s3_rounds']} {n:>4} held: wake "
                f"{row['wake_s']} s, ready → first byte {row['proxy_share_first_byte_ms']} ms, "
                f"→ last {row['proxy_share_last_first_byte_ms']} ms")
            if row["answered_200"] != n:
                raise RuntimeError(f"cold start: {row['answered_200']} of {n} answered 200")
    return {"runs": runs}


# ---------------------------------------------------------------------------------------------
# 4. Memory


def _sim_running(sim) -> float:
    for key, value in metrics(f"http://127.0.0.1:{sim.port}/metrics").items():
        if key.startswith("vllm:num_requests_running"):
            return value
    return 0.0


def scenario_memory(P: dict, L: Layout, work: pathlib.Path, overhead: dict | None) -> dict:
    n = P["s4_held"]
    capacity = max(cands.DEFAULT_CAPACITY, n + 256)
    backend = cands.start_nginx_backend(L.load, capacity)
    slow = cands.start_sim_backend(L.load, "--ttft", "600s", "--max-tokens", "1")
    out = {"idle": {c: [] for c in PROXIES}, "held": {}, "under_load": {}}
    with started(backend, slow), harness_on(L.load):
        for r in range(P["s4_rounds"]):
            for name in PROXIES:
                srv = cands.start_candidate(name, backend.port, L.proxy)
                with started(srv):
                    time.sleep(P["s4_idle_wait"])
                    mem = srv.memory()
                out["idle"][name].append({"memory": mem})
                log(f"4 memory    round {r + 1}/{P['s4_rounds']} {LABELS[name]:<15} idle "
                    f"VmRSS {mem['VmRSS']:.1f} MiB (RssAnon {mem['RssAnon']:.2f})")

        variants = [report.HELD_WAKING, *PROXIES]
        out["held"] = {v: [] for v in variants}
        for r in range(P["s4_rounds"]):
            for variant in variants:
                if variant == report.HELD_WAKING:
                    srv = cands.start_ours(free_port(), L.proxy, "--startup-delay", "1h",
                                           wait_ready=False, capacity=capacity,
                                           extra=f"    max_pending: {n + 100}\n")

                    def reached(srv=srv):
                        return srv.proxy.backend()["pending"]
                else:
                    srv = cands.start_candidate(variant, slow.port, L.proxy, capacity=capacity)

                    def reached():
                        return _sim_running(slow)
                with started(srv):
                    socks = clients.send_held(srv.port, n, P["s4_body_bytes"])
                    try:
                        eventually(lambda: reached() >= n, timeout=30,
                                   what=f"{n} requests held by {variant}")
                        time.sleep(P["settle"])
                        mem = srv.memory()
                        row = {"memory": mem, "reached": int(reached()),
                               "open": clients.count_open(socks)}
                    finally:
                        clients.close_all(socks)
                out["held"][variant].append(row)
                log(f"4 memory    round {r + 1}/{P['s4_rounds']} {variant:<40} {n} held: "
                    f"VmRSS {mem['VmRSS']:.1f} MiB")
                # The slow backend notices the closed connections before the next candidate.
                eventually(lambda: _sim_running(slow) == 0, timeout=30, what="slow backend idle")

    # Under the 256-connection load: scenario 1's samples, or a load of our own without it.
    if overhead and "256" in overhead["runs"]:
        for name in PROXIES:
            out["under_load"][name] = [x["rss_mib_max"] for x in overhead["runs"]["256"][name]]
        out["under_load_source"] = "the 256-connection wrk runs of scenario 1"
    else:
        script = clients.write_wrk_script(work)
        backend = cands.start_nginx_backend(L.load)
        servers = {}
        with started(backend, servers):
            for name in PROXIES:
                servers[name] = cands.start_candidate(name, backend.port, L.proxy)
            for name in PROXIES:
                out["under_load"][name] = []
            for r in range(P["s4_rounds"]):
                for name in PROXIES:
                    _, peak = wrk_with_peak_rss(servers[name], 256, P["s1_duration"], script, L)
                    out["under_load"][name].append(peak)
        out["under_load_source"] = "a 256-connection wrk run of scenario 4's own"
    return out


# ---------------------------------------------------------------------------------------------
# 5. Growth


def scenario_growth(P: dict, L: Layout, work: pathlib.Path, notes: list[str]) -> dict:
    script = clients.write_wrk_script(work)
    limit = cands.nofile()
    counts = [c for c in P["s5_conns"] if 2 * c + 1024 <= limit]
    if counts != P["s5_conns"]:
        notes.append(f"Growth: RLIMIT_NOFILE is {limit}; skipped "
                     f"{[c for c in P['s5_conns'] if c not in counts]} connections.")
    capacity = max([cands.DEFAULT_CAPACITY] + [c + 256 for c in counts])
    backend = cands.start_nginx_backend(L.load, capacity)
    servers = {}
    runs = {str(c): {name: [] for name in CANDIDATES} for c in counts}
    with started(backend, servers), harness_on(L.load):
        for name in CANDIDATES:
            servers[name] = cands.start_candidate(name, backend.port, L.proxy, capacity=capacity)
        for n in counts:
            for r in range(P["s5_rounds"]):
                for name in CANDIDATES:
                    srv = servers[name]
                    socks = clients.open_idle(srv.port, n)
                    try:
                        time.sleep(P["settle"])
                        mem = srv.memory()
                        w = clients.run_wrk(srv.port, P["s5_load_conns"], P["s5_duration"],
                                            script, L.load)
                        still = clients.count_open(socks)
                    finally:
                        clients.close_all(socks)
                    runs[str(n)][name].append({"memory": mem, "wrk": w, "still_open": still})
                    rss = f"VmRSS {mem['VmRSS']:.1f} MiB" if mem else ""
                    log(f"5 growth    {n:>5} open round {r + 1}/{P['s5_rounds']} "
                        f"{LABELS[name]:<15} p50 {w['p50_us']} µs  p99 {w['p99_us']} µs  {rss}  "
                        f"open {still}/{n}")
                    time.sleep(P["settle"])  # the candidate sees the closes before the next one
    return {"runs": runs}


# ---------------------------------------------------------------------------------------------


def machine_info() -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {"cpu_model": model, "cores": os.cpu_count(), "mem_total_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "loadavg_start": _loadavg()}


def _loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def versions() -> dict:
    v = {
        "vllm-autoscaler": cands.version([str(BIN_DIR / "vllm-autoscaler"), "--version"]),
        "nginx": cands.version(["nginx", "-v"]),
        "haproxy": cands.version(["haproxy", "-v"]),
        "wrk": cands.version(["wrk", "-v"]),
        "python": platform.python_version(),
    }
    git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                         capture_output=True, text=True)
    if git.returncode == 0:
        v["source"] = git.stdout.strip()
    binary = BIN_DIR / "vllm-autoscaler"
    built = datetime.datetime.fromtimestamp(binary.stat().st_mtime)
    v["binary"] = f"{binary} built {built.isoformat(timespec='seconds')}"
    return v


def update_readme(headline: str) -> None:
    path = ROOT / "README.md"
    text = path.read_text()
    begin, end = "<!-- bench:headline -->", "<!-- /bench:headline -->"
    if begin not in text or end not in text:
        raise SystemExit(f"bench: README.md has no {begin} … {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{headline}{end}{tail}")


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one round, 1 s runs (about a minute)")
    ap.add_argument("--smoke", action="store_true",
                    help="the test suite's run: every scenario, smallest sizes (< 15 s)")
    ap.add_argument("--scenarios", default="1,2,3,4,5", help="which scenarios, e.g. 1,2")
    ap.add_argument("--rounds", type=int, help="rounds of every scenario (overrides the profile)")
    ap.add_argument("--duration", type=int, help="seconds per wrk run in scenarios 1 and 5")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results",
                    help="where the JSON and Markdown go (default bench/results)")
    ap.add_argument("--readme", action="store_true", help="write the headline table into README.md")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = ap.parse_args()

    profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    P = dict(PROFILES[profile])
    if args.rounds:
        for k in P:
            if k.endswith("_rounds"):
                P[k] = args.rounds
    if args.duration:
        P["s1_duration"] = P["s5_duration"] = args.duration
    P["s1_request_bytes"] = len(clients.CHAT_BODY)
    P["s1_answer_bytes"] = len(cands.FIXED_ANSWER)
    if args.readme and (profile != "full" or args.scenarios != "1,2,3,4,5"):
        ap.error("--readme takes the full run of every scenario (no --quick, --smoke, --scenarios)")
    wanted = [int(x) for x in args.scenarios.split(",") if x.strip()]
    if any(x not in SCENARIOS for x in wanted):
        ap.error(f"--scenarios: pick from {sorted(SCENARIOS)}")

    # nginx and haproxy live in /usr/sbin, which a non-root user's PATH may lack.
    path = os.environ.get("PATH", "").split(":")
    os.environ["PATH"] = ":".join(path + [d for d in ("/usr/sbin", "/sbin") if d not in path])
    missing = [t for t in ("nginx", "haproxy", "wrk", "taskset") if shutil.which(t) is None]
    if missing:
        print(f"bench: {', '.join(missing)} not found: scripts/setup installs them (Debian "
              "packages nginx, haproxy, wrk)", file=sys.stderr)
        return 2
    for b in ("vllm-autoscaler", "vllm-sim"):
        if not (BIN_DIR / b).exists():
            print(f"bench: {BIN_DIR / b} not found: build it (cmake --preset release && "
                  "cmake --build --preset release) or set VA_BIN_DIR", file=sys.stderr)
            return 2

    # SIGTERM (a CI timeout, kill PID) unwinds like Ctrl-C, so every server started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cands.raise_nofile()
    L = Layout(not args.no_pin)
    command = shlex.join(["bench/run", *sys.argv[1:]])
    if "VA_BIN_DIR" in os.environ and pathlib.Path(os.environ["VA_BIN_DIR"]).resolve() != \
            (ROOT / "build" / "release" / "bin").resolve():
        command = f"VA_BIN_DIR={os.environ['VA_BIN_DIR']} {command}"
    t_start = time.time()
    meta = {"profile": profile, "command": command,
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine_info(), "versions": versions(), "layout": L.text, "notes": []}
    if float(meta["machine"]["loadavg_start"].split()[0]) > 0.5:
        meta["notes"].append(f"The machine was busy at the start (load average "
                             f"{meta['machine']['loadavg_start']}): expect noise.")
    log(f"bench: {profile} run, scenarios {wanted}; {L.text}")

    scenarios = {}
    work = pathlib.Path(tempfile.mkdtemp(prefix="va-bench-"))
    try:
        if 1 in wanted:
            scenarios["overhead"] = scenario_overhead(P, L, work)
        if 2 in wanted:
            scenarios["streaming"] = scenario_streaming(P, L)
        if 3 in wanted:
            scenarios["cold_start"] = scenario_cold_start(P)
        if 4 in wanted:
            scenarios["memory"] = scenario_memory(P, L, work, scenarios.get("overhead"))
        if 5 in wanted:
            scenarios["growth"] = scenario_growth(P, L, work, meta["notes"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if "memory" in scenarios:
        scenarios["memory"]["peak"] = dict(cands.peaks)

    meta["duration_s"] = round(time.time() - t_start, 1)
    meta["machine"]["loadavg_end"] = _loadavg()
    results = {"meta": meta, "params": P, "scenarios": scenarios}
    results["summary"] = report.summarise(scenarios)
    results["targets"] = report.targets(results["summary"])
    markdown = report.render(results)

    args.out.mkdir(parents=True, exist_ok=True)
    name = RESULT_NAMES[profile]
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    (args.out / f"{name}.md").write_text(markdown)
    print(markdown)
    if args.readme:
        update_readme(report.headline(results))
    log(f"bench: wrote {args.out / name}.json and .md in {meta['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
