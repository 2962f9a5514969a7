"""The load and the clients of bench/run: wrk for request rates and latency, a small SSE reader
that times every event against the send time vllm-sim wrote into it, and plain sockets that hold
connections open (idle keep-alive, or a request sent and its answer never read)."""

from __future__ import annotations

import json
import pathlib
import re
import socket
import subprocess
import time

from candidates import MODEL, taskset

CHAT_BODY = json.dumps({"model": MODEL, "max_tokens": 16,
                        "messages": [{"role": "user", "content": "Say hi."}]},
                       separators=(",", ":"))

# wrk's done() hook prints one line of JSON; latencies are in microseconds.
WRK_LUA = r"""
wrk.method = "POST"
wrk.body = [[%BODY%]]
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def write_wrk_script(d: pathlib.Path) -> pathlib.Path:
    path = d / "chat.lua"
    path.write_text(WRK_LUA.replace("%BODY%", CHAT_BODY))
    return path


def run_wrk(port: int, conns: int, duration: int, script: pathlib.Path, cpus=None,
            sample=None, interval: float = 0.1) -> dict:
    """wrk -t1 -c`conns` for `duration` seconds against POST /v1/chat/completions on `port`.
    While it runs, `sample()` is called every `interval` s. Returns wrk's numbers plus `rps`."""
    cmd = [*taskset(cpus), "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
           "-s", str(script), f"http://127.0.0.1:{port}/v1/chat/completions"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while proc.poll() is None:
            if sample:
                sample()
            try:
                proc.wait(interval)
            except subprocess.TimeoutExpired:
                pass
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    m = re.search(r"^WRKJSON (\{.*\})$", out, re.M)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n{out}")
    r = json.loads(m.group(1))
    r["rps"] = round(r["requests"] / (r["duration_us"] / 1e6), 1)
    r["errors"] = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors",
                                     "status_errors", "timeouts"))
    return r


def _request(body: str) -> bytes:
    data = body.encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data)) + data


class _Chunked:
    """Incremental decoder of a chunked body: feed() returns the payload bytes; `.done` after
    the last chunk."""

    def __init__(self):
        self.buf = b""
        self.left = -1  # -1: a size line is next; -2: the CRLF after a chunk's data
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = b""
        while not self.done:
            if self.left == -1:
                end = self.buf.find(b"\r\n")
                if end < 0:
                    break
                size = int(self.buf[:end].split(b";")[0], 16)
                self.buf = self.buf[end + 2:]
                if size == 0:
                    self.done = True
                    break
                self.left = size
            elif self.left == -2:
                if len(self.buf) < 2:
                    break
                self.buf = self.buf[2:]
                self.left = -1
            else:
                take = self.buf[:self.left]
                out += take
                self.buf = self.buf[len(take):]
                self.left -= len(take)
                if self.left == 0:
                    self.left = -2
                if not self.buf:
                    break
        return out


_SENT = re.compile(rb'"sim_sent_ns":(\d+)')


def sse_stream(port: int, max_tokens: int, timeout: float = 30) -> dict:
    """One streamed chat completion from vllm-sim --event-timestamps on a fresh connection.
    Returns the time to the first byte of the answer (µs, from just before the request is
    written) and, per event, its arrival here minus the `sim_sent_ns` it carries (µs, both
    CLOCK_REALTIME)."""
    body = json.dumps({"model": MODEL, "max_tokens": max_tokens, "stream": True,
                       "messages": [{"role": "user", "content": "Count."}]})
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        request = _request(body)
        # Before the send: on one CPU the sim may answer before sendall() returns.
        t0 = time.time_ns()
        s.sendall(request)
        first = None
        head = b""
        chunked = None
        events = b""
        latencies = []
        finished = False
        while not finished:
            data = s.recv(65536)
            now = time.time_ns()
            if not data:
                break
            if first is None:
                first = now
            if chunked is None:
                head += data
                if b"\r\n\r\n" not in head:
                    continue
                head, data = head.split(b"\r\n\r\n", 1)
                status = head.split(b" ", 2)[1]
                if status != b"200":
                    raise RuntimeError(f"stream through port {port}: {head!r}")
                chunked = _Chunked() if b"chunked" in head.lower() else False
            events += chunked.feed(data) if chunked else data
            while b"\n\n" in events:
                event, events = events.split(b"\n\n", 1)
                m = _SENT.search(event)
                if m:
                    latencies.append((now - int(m.group(1))) / 1000)
                elif b"[DONE]" in event:
                    finished = True
            if chunked and chunked.done:
                finished = True
        return {"ttfb_us": (first - t0) / 1000 if first else None, "event_latency_us": latencies}
    finally:
        s.close()


def _read_response(s: socket.socket) -> bytes:
    """Reads one response (Content-Length or chunked) from `s`; returns its status code."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        part = s.recv(65536)
        if not part:
            raise ConnectionError("closed before the response head")
        buf += part
    head, rest = buf.split(b"\r\n\r\n", 1)
    lower = head.lower()
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", lower)
    if m:
        need = int(m.group(1)) - len(rest)
        while need > 0:
            part = s.recv(min(need, 65536))
            if not part:
                raise ConnectionError("closed mid-body")
            need -= len(part)
    elif b"chunked" in lower:
        dec = _Chunked()
        dec.feed(rest)
        while not dec.done:
            part = s.recv(65536)
            if not part:
                raise ConnectionError("closed mid-body")
            dec.feed(part)
    return head.split(b" ", 2)[1]


def open_idle(port: int, n: int) -> list[socket.socket]:
    """Opens `n` keep-alive connections to `port`, one after the other, each carrying one
    request whose answer is read in full: then they sit idle. Raises if an answer is not 200."""
    socks = []
    request = _request(CHAT_BODY)
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
            s.sendall(request)
            status = _read_response(s)
            if status != b"200":
                raise RuntimeError(f"port {port}: status {status!r}")
    except BaseException:
        close_all(socks)
        raise
    return socks


def send_held(port: int, n: int, body_bytes: int) -> list[socket.socket]:
    """Opens `n` connections to `port`, each sending one chat request of `body_bytes` bytes whose
    answer is never read (the request is held or in flight until the socket closes)."""
    pad = body_bytes - len(json.dumps({"model": MODEL, "max_tokens": 1,
                                       "messages": [{"role": "user", "content": ""}]}))
    body = json.dumps({"model": MODEL, "max_tokens": 1,
                       "messages": [{"role": "user", "content": "x" * max(pad, 0)}]})
    request = _request(body)
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
            s.sendall(request)
    except BaseException:
        close_all(socks)
        raise
    return socks


def count_open(socks: list[socket.socket]) -> int:
    """How many of `socks` the peer has not closed (nothing is expected to arrive on them)."""
    n = 0
    for s in socks:
        try:
            s.setblocking(False)  # with a timeout set, recv() would first wait that long
            if s.recv(1, socket.MSG_PEEK):
                n += 1  # unexpected bytes, but open
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
