#!/usr/bin/python3
"""Where a proxy's CPU goes per request: vllm-autoscaler beside nginx and the floors.

    /usr/bin/python3 bench/profile.py [--conns 32,256] [--rounds 3] [--seconds 5]
                                      [--candidates vllm-autoscaler,nginx,floor-coro,...]
                                      [--json out.json] [--mallocs | --instructions [--cache-sim]]

Scenario 1's load (wrk, POST /v1/chat/completions, the fixed ~400-byte answer from an nginx
backend) with each candidate pinned to its own CPU and saturated: its req/s and its user and
kernel CPU time per request (/proc/PID/stat), the median over interleaved rounds. The floors
(bench/floor/) are proxies with none of our features: `floor-coro` is Asio coroutines and Beast's
parser (our stack), `floor-coro-typed` the same with io_context's executor instead of the
type-erased one, `floor-asio` bare epoll's relay on Asio's reactor with completion handlers,
`floor-epoll` bare epoll. `vllm-autoscaler@DIR` adds the proxy built in DIR
(another commit's build: a before/after in one run). bench/README.md ("Fourth round") reads the
results.
Uses the release build unless VA_BIN_DIR says otherwise.

--mallocs counts instead how many times each candidate calls glibc's malloc per request, and with
which sizes (a uprobe on malloc with its `bytes` argument, through `perf record`; it needs root,
and libc's debug info, Debian's libc6-dbg, where `perf probe` can read the kernel's tracefs;
elsewhere the probe is written to tracefs directly). The probe slows the candidate: its rate means nothing
then.

--instructions counts instead the instructions each candidate runs per request (user space),
with every candidate under valgrind's callgrind (Debian's valgrind): its counters zeroed before
each load and dumped after it (callgrind_control). Unlike CPU time, the count does not move with
the machine's noise, so it tells a change of ~1 % apart; but it weighs every instruction alike
(a cache miss or a mispredicted branch costs nothing here), so it complements the timed rounds and
does not replace them. The rate under valgrind means nothing either.

--instructions --cache-sim adds callgrind's simulation of the caches (--cache-sim=yes, with the
sizes valgrind reads from this CPU): per request, the instruction fetches that miss the first
level's instruction cache, the data reads and writes that miss its data cache, and what misses the
last level. Which code and memory a request touches is the part of its time that instructions do
not show.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import shutil
import signal
import statistics
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
import run as bench  # noqa: E402

DEFAULT = ("vllm-autoscaler", "nginx", *cands.FLOORS)


def measure(srv: cands.Server, conns: int, seconds: int, script: pathlib.Path, load) -> dict:
    user0, sys0 = srv.cpu_times()
    w = clients.run_wrk(srv.port, conns, seconds, script, load)
    user1, sys1 = srv.cpu_times()
    n = max(w["requests"], 1)
    return {"rps": w["rps"], "p50_us": w["p50_us"], "p99_us": w["p99_us"], "errors": w["errors"],
            "user_us": round((user1 - user0) * 1e6 / n, 2),
            "kernel_us": round((sys1 - sys0) * 1e6 / n, 2)}


MALLOC_EVENT = "probe_libc:malloc_sz"


def add_malloc_probe() -> str | None:
    """The uprobe --mallocs records; None when it is there, else why it cannot be."""
    listed = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
    if MALLOC_EVENT in listed:
        return None
    libc = subprocess.run(["gcc", "-print-file-name=libc.so.6"], capture_output=True,
                          text=True).stdout.strip()
    add = subprocess.run(["perf", "probe", "-x", os.path.realpath(libc), "--add",
                          "malloc_sz=malloc bytes"], capture_output=True, text=True)
    if add.returncode == 0:
        return None
    # Debian's perf 6.1 cannot read a newer kernel's tracefs README; the same probe written to
    # tracefs by hand: malloc's offset in libc (its file offset: libc's text maps at its address),
    # and its first argument's register.
    symbols = subprocess.run(["nm", "-D", os.path.realpath(libc)], capture_output=True,
                             text=True).stdout.split("\n")
    at = next((line.split()[0] for line in symbols if line.endswith(" malloc@@GLIBC_2.2.5")), "")
    probe = f"p:{MALLOC_EVENT.replace(':', '/')} {os.path.realpath(libc)}:0x{at} bytes=%di:u64\n"
    try:  # os.write: tracefs refuses the seek of a file opened for appending
        fd = os.open("/sys/kernel/tracing/uprobe_events", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, probe.encode())
        finally:
            os.close(fd)
        return None
    except OSError as e:
        return (add.stderr.strip() or "perf probe failed") + f"; tracefs: {e}"


def count_mallocs(srv: cands.Server, conns: int, seconds: int, script: pathlib.Path, load,
                  work: pathlib.Path) -> dict:
    data = work / "mallocs.data"
    perf = subprocess.Popen(["perf", "record", "-q", "-e", MALLOC_EVENT, "-p",
                             str(srv.pids()[0]), "-o", str(data)], stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # perf attached
    w = clients.run_wrk(srv.port, conns, seconds, script, load)
    perf.send_signal(signal.SIGINT)
    perf.wait()
    trace = subprocess.run(["perf", "script", "-i", str(data), "-F", "trace"],
                           capture_output=True, text=True).stdout
    sizes = collections.Counter(int(line.split("bytes=")[1].split()[0], 0)
                                for line in trace.splitlines() if "bytes=" in line)
    n = max(w["requests"], 1)
    return {"mallocs": round(sum(sizes.values()) / n, 2), "errors": w["errors"],
            "sizes": {str(size): round(k / n, 2) for size, k in sizes.most_common(12)}}


def count_instructions(srv: cands.Server, conns: int, seconds: int, script: pathlib.Path, load,
                       work: pathlib.Path) -> dict:
    subprocess.run(["callgrind_control", "--zero"], capture_output=True, check=True)
    w = clients.run_wrk(srv.port, conns, seconds, script, load)
    before = set(work.glob("callgrind.*"))
    subprocess.run(["callgrind_control", "--dump"], capture_output=True, check=True)
    totals: collections.Counter = collections.Counter()
    for pid in srv.pids():
        dumps = sorted(set(work.glob(f"callgrind.{pid}.*")) - before)
        for dump in dumps:
            events: list[str] = []
            for line in dump.read_text().splitlines():
                if line.startswith("events:"):
                    events = line.split()[1:]
                if line.startswith("summary:"):
                    totals.update(dict(zip(events, map(int, line.split()[1:]))))
    n = max(w["requests"], 1)
    out = {"instructions": round(totals["Ir"] / n), "requests": w["requests"],
           "errors": w["errors"]}
    if "D1mr" in totals:  # --cache-sim
        out["i1_misses"] = round(totals["I1mr"] / n)
        out["d1_misses"] = round((totals["D1mr"] + totals["D1mw"]) / n)
        out["ll_misses"] = round((totals["DLmr"] + totals["DLmw"] + totals["ILmr"]) / n, 1)
    return out


def table(results: dict, names: list[str]) -> str:
    lines = []
    for conns, per in results.items():
        base = statistics.median(r["rps"] for r in per["nginx"]) if "nginx" in per else None
        lines += [f"\n{conns} connections (median of {len(next(iter(per.values())))} rounds)\n",
                  "| candidate | req/s | × nginx | CPU µs/request: user | kernel | total |",
                  "|---|---|---|---|---|---|"]
        for name in names:
            med = {k: statistics.median(r[k] for r in per[name])
                   for k in ("rps", "user_us", "kernel_us")}
            ratio = f"{med['rps'] / base:.2f}" if base else "—"
            lines.append(f"| {name} | {med['rps']:,.0f} | {ratio} | {med['user_us']:.1f} | "
                         f"{med['kernel_us']:.1f} | {med['user_us'] + med['kernel_us']:.1f} |")
    return "\n".join(lines)


def instructions_table(results: dict, names: list[str], key: str = "instructions",
                       what: str = "instructions") -> str:
    lines = ["\n| candidate | " + " | ".join(f"{c} conns" for c in results) + " |",
             "|---|" + "---|" * len(results)]
    for name in names:
        cells = []
        for per in results.values():
            runs = [r[key] for r in per[name]]
            f = ",.0f" if key == "instructions" else ",.1f"
            spread = f" (±{(max(runs) - min(runs)) / 2:{f}})" if len(runs) > 1 else ""
            cells.append(f"{statistics.median(runs):{f}}{spread}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return f"{what} per request (user space, callgrind), median of rounds (± half the range)" \
        + "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", default="32,256")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--candidates", default=",".join(DEFAULT))
    ap.add_argument("--json", type=pathlib.Path)
    ap.add_argument("--mallocs", action="store_true", help="count malloc calls per request")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions per request (callgrind)")
    ap.add_argument("--cache-sim", action="store_true",
                    help="with --instructions: instruction and data cache misses per request too")
    a = ap.parse_args()
    if a.mallocs and (why := add_malloc_probe()):
        print(f"--mallocs needs a uprobe on malloc: {why}")
        return 2
    if a.cache_sim and not a.instructions:
        print("--cache-sim counts under callgrind: it goes with --instructions")
        return 2
    if a.instructions and not shutil.which("callgrind_control"):
        print("--instructions needs valgrind (Debian: apt-get install valgrind)")
        return 2
    names = a.candidates.split(",")
    L = bench.Layout(pin=True)
    if L.proxy is None:
        print("profile.py needs two CPUs: the load on one, the candidate on the other")
        return 2
    cands.raise_nofile()
    work = pathlib.Path(tempfile.mkdtemp(prefix="va-profile-"))
    script = clients.write_wrk_script(work)
    servers: dict[str, cands.Server] = {}
    results: dict[int, dict[str, list]] = {}
    with bench.harness_on(L.load):
        backend = cands.start_nginx_backend(L.load)
        if a.instructions:  # the candidates only: the backend must keep up
            cands.WRAP[:] = ["valgrind", "--tool=callgrind", "--dump-instr=no",
                             f"--callgrind-out-file={work}/callgrind.%p",
                             *(["--cache-sim=yes"] if a.cache_sim else [])]
        with bench.started(backend, servers):
            bench.start_warmed(servers, names, backend, L, script, 32, 2)
            for conns in map(int, a.conns.split(",")):
                results[conns] = {name: [] for name in names}
                for r in range(a.rounds):
                    for name in names:
                        if a.instructions:
                            m = count_instructions(servers[name], conns, a.seconds, script, L.load,
                                                   work)
                            results[conns][name].append(m)
                            misses = (f", cache misses: {m['i1_misses']:,} I1, "
                                      f"{m['d1_misses']:,} D1, {m['ll_misses']:,} LL"
                                      if "d1_misses" in m else "")
                            print(f"c={conns:<4} round {r + 1}/{a.rounds} {name:<17} "
                                  f"{m['instructions']:>9,} instructions/request{misses} "
                                  f"({m['requests']:,} requests)", flush=True)
                            continue
                        if a.mallocs:
                            m = count_mallocs(servers[name], conns, a.seconds, script, L.load, work)
                            results[conns][name].append(m)
                            sizes = ", ".join(f"{b} B × {k}" for b, k in m["sizes"].items())
                            print(f"c={conns:<4} round {r + 1}/{a.rounds} {name:<17} "
                                  f"{m['mallocs']:6.2f} malloc/request ({sizes})", flush=True)
                            continue
                        m = measure(servers[name], conns, a.seconds, script, L.load)
                        results[conns][name].append(m)
                        print(f"c={conns:<4} round {r + 1}/{a.rounds} {name:<17} "
                              f"{m['rps']:>9,.0f} req/s  user {m['user_us']:5.1f} µs  "
                              f"kernel {m['kernel_us']:5.1f} µs  errors {m['errors']}", flush=True)
    if a.instructions:
        print(instructions_table(results, names))
        if a.cache_sim:
            for key, what in (("i1_misses", "first-level instruction cache misses"),
                              ("d1_misses", "first-level data cache misses"),
                              ("ll_misses", "last-level cache misses")):
                print(instructions_table(results, names, key, what))
    elif not a.mallocs:
        print(table(results, names))
    if a.json:
        a.json.write_text(json.dumps({"conns": results, "layout": L.text}, indent=1))
    errors = sum(m["errors"] for per in results.values() for runs in per.values() for m in runs)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
