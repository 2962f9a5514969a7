#!/usr/bin/python3
"""Soak: mixed streaming and non-streaming traffic for a while, with the backend put to sleep and
woken again many times and clients leaving at random points. Not part of the test suite.

Every request must end as either answered (a status line and, for a stream, `data: [DONE]`) or
explicitly rejected (a 4xx/5xx in OpenAI shape); clients that leave on purpose are counted apart.
Anything else (a connection reset before an answer, a stream cut without its error event, a
hang) is a loss and fails the run. RSS and open descriptors are sampled at the start and the end
of each quiet period (backend asleep, nothing in flight) and must stay flat; a sanitizer report
in the proxy's output fails the run too.

    /usr/bin/python3 bench/soak.py [--minutes 10] [--cycles 30] [--clients 16] [--asan | --tsan]

--tsan runs the build/tsan binaries (ThreadSanitizer) with two I/O threads, which then share the
backend's state, the connection registry and the metrics. --asan runs the build/asan binaries (ASan + UBSan); the default is build/release. ASan keeps
freed memory in its quarantine (256 MiB) before reusing any, so under ASan RSS climbs over the
first cycles by design: flatness is then measured from the end of the first third of the run,
and LeakSanitizer's check at exit (a report fails the run) is the leak test. The same baseline
serves under TSan, whose shadow memory also grows as the run touches new memory.
"""

import argparse
import json
import os
import pathlib
import random
import socket
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--cycles", type=int, default=30, help="wake/sleep cycles over the run")
    ap.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    ap.add_argument("--asan", action="store_true", help="use build/asan (ASan + UBSan)")
    ap.add_argument("--tsan", action="store_true",
                    help="use build/tsan (ThreadSanitizer), with 2 I/O threads")
    return ap.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
BUILD = "asan" if ARGS and ARGS.asan else "tsan" if ARGS and ARGS.tsan else "release"
os.environ.setdefault("VA_BIN_DIR", str(ROOT / "build" / BUILD / "bin"))
sys.path.insert(0, str(ROOT / "test" / "support"))

from proxy import sim_config, start_proxy  # noqa: E402
from support import free_port, http, sanitizer_reports  # noqa: E402


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = {"answered": 0, "rejected": 0, "left": 0, "lost": 0}
        self.lost = []

    def add(self, what, detail=""):
        with self.lock:
            self.n[what] += 1
            if what == "lost" and len(self.lost) < 20:
                self.lost.append(detail)


def one_request(port: int, rng: random.Random, counts: Counts, stop: threading.Event):
    stream = rng.random() < 0.5
    body = json.dumps({"model": "sim-model", "stream": stream,
                       "max_tokens": rng.randint(1, 60),
                       "messages": [{"role": "user", "content": "soak"}]}).encode()
    leave_after = rng.random() * 0.5 if rng.random() < 0.15 else None  # leaves at a random point
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=90) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nContent-Type: "
                      b"application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
            data = b""
            while True:
                if leave_after is not None and time.monotonic() - start > leave_after:
                    counts.add("left")
                    return
                s.settimeout(0.05 if leave_after is not None else 90)
                try:
                    part = s.recv(65536)
                except socket.timeout:
                    if leave_after is None:
                        counts.add("lost", "hung 90 s")
                        return
                    continue
                if not part:
                    break
                data += part
    except OSError as e:
        counts.add("lost", f"{type(e).__name__}: {e}")
        return
    status = data[9:12]
    if status == b"200":
        whole = (b"data: [DONE]" in data and data.endswith(b"0\r\n\r\n")
                 and b"upstream connection lost" not in data) if stream else b'"choices"' in data
        if whole:
            counts.add("answered")
        else:
            counts.add("lost", "incomplete answer: " + repr(data[-120:]))
    elif status[:1] in (b"4", b"5") and b'"error"' in data:
        counts.add("rejected")
    else:
        counts.add("lost", "no answer: " + repr(data[:120]))


def client(port, seed, counts, stop):
    rng = random.Random(seed)
    while not stop.is_set():
        one_request(port, rng, counts, stop)
        time.sleep(rng.random() * 0.02)


def sample(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    a = ARGS
    port = free_port()
    p = start_proxy(sim_config(port, "--itl", "2ms", "--startup-delay", "300ms", idle="1s",
                               wake="30s", top="threads: 2" if a.tsan else ""))
    counts = Counts()
    samples = []
    try:
        period = a.minutes * 60 / a.cycles
        for cycle in range(a.cycles):
            p.wait_state("asleep", timeout=60)
            time.sleep(0.3)
            samples.append(sample(p.pid))
            stop = threading.Event()
            threads = [threading.Thread(target=client, args=(p.port, cycle * 1000 + i, counts,
                                                             stop))
                       for i in range(a.clients)]
            for t in threads:
                t.start()
            time.sleep(max(period - 2, 1))  # traffic; then quiet until the idle stop
            stop.set()
            for t in threads:
                t.join(120)
            print(f"cycle {cycle + 1}/{a.cycles}: {counts.n}  RSS {samples[-1][0]:.1f} MiB, "
                  f"fds {samples[-1][1]}", flush=True)
        p.wait_state("asleep", timeout=60)
        time.sleep(0.3)
        samples.append(sample(p.pid))
        wakes = len(p.started_pids())
    finally:
        code = p.stop()
    reports = sanitizer_reports({"vllm-autoscaler": p.output()})
    # The baseline: after the first cycle (warm: pools, the allocator's arenas), or under a
    # sanitizer after a third of the run (ASan's quarantine full, TSan's shadow and history grown).
    base = len(samples) // 3 if a.asan or a.tsan else 1
    first, last = samples[min(base, len(samples) - 1)], samples[-1]
    print(json.dumps({"counts": counts.n, "wakes": wakes, "exit": code,
                      "baseline_cycle": base,
                      "rss_mib": {"baseline": first[0], "end": last[0]},
                      "fds": {"baseline": first[1], "end": last[1]},
                      "lost_examples": counts.lost, "sanitizer_reports": len(reports)},
                     indent=1))
    ok = (counts.n["lost"] == 0 and code == 0 and not reports and wakes >= a.cycles
          and last[1] <= first[1] and last[0] <= first[0] * 1.25 + 2)
    print("soak:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
