#!/usr/bin/python3
"""Cold start: N requests held while vllm-sim "loads", then released.

For each N it reports the wake time (first request sent → backend ready, as the proxy saw it) and
the proxy's own share after the backend became ready: from the proxy's `to=ready` transition (taken
right after the first successful health answer) to the first byte at a client, and to the last
client's first byte. Beside it, the same N requests sent at once straight to the ready backend. Uses the release build unless VA_BIN_DIR says otherwise.

    /usr/bin/python3 bench/cold_start.py [--delay 2s] [--counts 1,100,1000] [--json out.json]
"""

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("VA_BIN_DIR", str(ROOT / "build" / "release" / "bin"))
sys.path.insert(0, str(ROOT / "test" / "support"))

from proxy import sim_command, start_proxy  # noqa: E402
from support import free_port  # noqa: E402

BODY = json.dumps({"model": "sim-model", "max_tokens": 1,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()


async def one_request(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(BODY), BODY))
    await writer.drain()
    first = await reader.read(1)
    t_first = time.time()
    rest = await reader.read()
    writer.close()
    status = (first + rest)[9:12]
    return t_first, status


def proxy_time(line):
    return datetime.datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()


def release_figures(firsts, t_ready, direct, t_direct) -> dict:
    """The proxy's share after the backend became ready (at t_ready): to the first client's first
    byte and to the last one's; beside it the same N sent at t_direct straight to the backend.
    `firsts` and `direct`: the clients' first-byte times. `t_ready`: one time for every client, or
    a list with each client's own, in the order of `firsts` (with several proxies, the time the
    proxy it went through saw the backend ready). Milliseconds."""
    readies = t_ready if isinstance(t_ready, list) else [t_ready] * len(firsts)
    shares = [first - ready for first, ready in zip(firsts, readies, strict=True)]
    return {
        "proxy_share_first_byte_ms": round(min(shares) * 1000, 1),
        "proxy_share_last_first_byte_ms": round(max(shares) * 1000, 1),
        "direct_first_byte_ms": round((min(direct) - t_direct) * 1000, 1),
        "direct_last_first_byte_ms": round((max(direct) - t_direct) * 1000, 1),
    }


async def run(n, delay):
    port = free_port()
    cfg = f"""
log: {{level: info}}
limits: {{max_connections: 20000}}
backends:
  - name: sim
    models: ["sim-model"]
    upstream: http://127.0.0.1:{port}
    max_pending: {max(n, 1000)}
    wake_timeout: 60s
    scaler:
      type: process
      command: {sim_command(port, "sim-model", "--startup-delay", delay, "--disable-access-log")}
"""
    p = start_proxy(cfg)
    try:
        t0 = time.time()
        results = await asyncio.gather(*(one_request(p.port) for _ in range(n)))
        ready = [l for l in p.log_lines() if l.get("msg") == "backend state" and l.get("to") == "ready"]
        t_ready = proxy_time(ready[0])
        firsts = sorted(r[0] for r in results)
        ok = sum(1 for r in results if r[1] == b"200")
        # The same N requests sent at once straight to the (now ready) backend: how long the
        # backend and this client take on their own, to set the proxy's share against.
        t1 = time.time()
        direct = sorted(r[0] for r in await asyncio.gather(*(one_request(port) for _ in range(n))))
        return {"held_requests": n, "answered_200": ok, "wake_s": round(t_ready - t0, 3),
                **release_figures(firsts, t_ready, direct, t1)}
    finally:
        p.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", default="2s")
    ap.add_argument("--counts", default="1,100,1000")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = [asyncio.run(run(int(n), args.delay)) for n in args.counts.split(",")]
    report(rows, [("wake (s)", "wake_s")], "the ready backend", args.json)


def report(rows: list[dict], middle: list[tuple[str, str]], direct_to: str, json_path: str | None):
    """Prints the rows as a Markdown table (held requests, answers, the `middle` columns as
    (header, key), the proxy's share of the wake, the same N sent straight to `direct_to`) and
    writes them as JSON to `json_path` if given."""
    columns = ([("held requests", "held_requests"), ("answered 200", "answered_200")] + middle
               + [("ready → first byte (ms)", "proxy_share_first_byte_ms"),
                  ("→ last first byte (ms)", "proxy_share_last_first_byte_ms")])
    print("| " + " | ".join(h for h, _ in columns)
          + f" | same N direct to {direct_to}: first / last first byte (ms) |")
    print("|" + "---|" * (len(columns) + 1))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for _, k in columns)
              + f" | {r['direct_first_byte_ms']} / {r['direct_last_first_byte_ms']} |")
    if json_path:
        pathlib.Path(json_path).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
