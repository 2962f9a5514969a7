"""Faults around the upstream (issue 5): a backend killed in the middle of 50 streams, an upstream
that accepts and never answers, one that stalls mid-stream. Every client gets an end it can see,
nothing hangs, the proxy keeps serving, and no file descriptor is left behind."""

import concurrent.futures as cf
import json
import os
import signal
import socket
import threading
import time

from proxy import backend_yaml, config_yaml, sim_config
from support import (CHAT, RawUpstream, chat, eventually, free_port, http, sanitized,
                     serve_requests)

# Memory limits for the release-like builds; the ASan build's allocator needs more room.
MEMORY_SCALE = 4 if sanitized() else 1


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int) -> int:
    """The proxy's descriptors between its health probes (each opens a connection for a moment):
    the fewest seen over half a second."""
    seen = []
    for _ in range(50):
        seen.append(open_fds(pid))
        time.sleep(0.01)
    return min(seen)


def stream_until_end(port: int, body: bytes, started: threading.Barrier, deadline: float):
    """One streaming chat over a raw socket. Returns what ended it: "done" (data: [DONE] after
    the events), "closed" (the connection closed without it) or "hung" (neither by `deadline`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                  b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        data = b""
        first = False
        while time.monotonic() < deadline:
            try:
                part = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return "closed", data
            if not part:
                return "closed", data
            data += part
            if not first and b"data: {" in data:
                first = True
                started.wait(30)
            if b"data: [DONE]" in data:
                return "done", data
        return "hung", data


def test_a_backend_killed_in_the_middle_of_50_streams_ends_every_stream(proxy):
    port = free_port()
    p = proxy(sim_config(port, "--itl", "20ms", wake="20s"))
    body = json.dumps(chat(max_tokens=2000, stream=True)).encode()
    started = threading.Barrier(51)
    deadline = time.monotonic() + 60
    with cf.ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(stream_until_end, p.port, body, started, deadline)
                   for _ in range(50)]
        started.wait(30)  # every client has its first event
        [sim] = p.started_pids()
        os.kill(sim, signal.SIGKILL)
        killed = time.monotonic()
        results = [f.result() for f in futures]
    ends = [r for r, _ in results]
    assert ends.count("hung") == 0, ends
    print(f"FIGURE sigkill: 50 streams ended ({ends.count('done')} with an error event and "
          f"[DONE], {ends.count('closed')} closed) within {time.monotonic() - killed:.2f} s")
    assert time.monotonic() - killed < 30
    # A stream cut after its head gets vLLM's own error event before [DONE].
    for end, data in results:
        if end == "done":
            assert b"upstream connection lost mid-stream" in data
    assert http("GET", p.url + "/health")[0] == 200
    p.wait_state("asleep", timeout=10)
    code, headers, _ = http("POST", p.url + "/v1/chat/completions", CHAT, None, 60)
    assert code == 200
    assert "wake;dur=" in headers.get("server-timing", "")
    assert len(p.started_pids()) == 2


class SilentUpstream:
    """Answers /health; for anything else sends `first` (if any) and then nothing, holding the
    connection open until the proxy closes it."""

    def __init__(self, first: bytes = b""):
        self.first = first
        self.closed_by_proxy = threading.Semaphore(0)
        self.server = RawUpstream(self._handle)
        self.port = self.server.port

    def _handle(self, conn):
        serve_requests(conn, self._request)

    def _request(self, conn, head, rest):
        if self.first:
            conn.sendall(self.first)
        while conn.recv(65536):
            pass
        self.closed_by_proxy.release()
        return None


def silent_proxy(proxy, up):
    return proxy(config_yaml(backend_yaml("b", up.port, ["sim-model"], static=True,
                                          extra="    upstream_timeout: 1s\n")))


def test_an_upstream_that_never_answers_gets_504_and_leaves_no_descriptor(proxy):
    up = SilentUpstream()
    p = silent_proxy(proxy, up)
    p.wait_state("ready")
    before = settled_fds(p.pid)
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(
            lambda _: http("POST", p.url + "/v1/chat/completions", CHAT, None, 30), range(5)))
    took = time.monotonic() - t0
    for code, headers, body in answers:
        assert code == 504, body
        assert b"sent nothing for 1000ms (backends[].upstream_timeout)" in body
    assert 0.9 < took < 10
    print(f"FIGURE silent upstream: 5 requests answered 504 in {took:.2f} s (upstream_timeout 1s)")
    for _ in range(5):
        assert up.closed_by_proxy.acquire(timeout=10), "the upstream connection stayed open"
    eventually(lambda: open_fds(p.pid) <= before, 10, f"the proxy's fds back to {before}")
    up.server.close()


def test_an_upstream_that_stalls_mid_stream_ends_the_stream_with_an_error_event(proxy):
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    event = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    up = SilentUpstream(head + b"%x\r\n%s\r\n" % (len(event), event))
    p = silent_proxy(proxy, up)
    p.wait_state("ready")
    before = settled_fds(p.pid)
    end, data = stream_until_end(p.port, json.dumps(chat(stream=True)).encode(), threading.Barrier(1),
                                 time.monotonic() + 20)
    assert end == "done", data
    assert data.startswith(b"HTTP/1.1 200 ")
    assert event in data
    assert b"upstream connection lost mid-stream" in data
    assert up.closed_by_proxy.acquire(timeout=10)
    eventually(lambda: open_fds(p.pid) <= before, 10, f"the proxy's fds back to {before}")
    assert http("GET", p.url + "/health")[0] == 200
    up.server.close()


def test_sigterm_during_100_streams_lets_every_one_finish(proxy):
    port = free_port()
    p = proxy(sim_config(port, "--itl", "20ms", wake="20s",
                         top="limits: {shutdown_timeout: 30s}"))
    body = json.dumps(chat(max_tokens=100, stream=True)).encode()  # about 2 s each
    started = threading.Barrier(101)
    deadline = time.monotonic() + 60
    with cf.ThreadPoolExecutor(100) as pool:
        futures = [pool.submit(stream_until_end, p.port, body, started, deadline)
                   for _ in range(100)]
        started.wait(30)
        os.kill(p.pid, signal.SIGTERM)
        results = [f.result() for f in futures]
    assert [end for end, _ in results].count("done") == 100
    for _, data in results:
        assert b"upstream connection lost" not in data
        assert data.count(b'"content":"tok') == 100  # every token, then [DONE]
    assert p.wait(timeout=30) == 0


def test_100_slow_readers_hold_back_the_backend_and_keep_memory_bounded(proxy):
    port = free_port()
    # Each stream is ~1.3 MB of events as fast as the sim can write them.
    p = proxy(sim_config(port, "--itl", "0ms", wake="20s"))
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    rss_before = rss_mib(p.pid)
    body = json.dumps(chat(max_tokens=20000, stream=True, content="x")).encode()
    socks = []
    try:
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", p.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: "
                      b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            socks.append(s)
        peak = rss_before
        for _ in range(30):  # 3 s in which nobody reads
            peak = max(peak, rss_mib(p.pid))
            time.sleep(0.1)
        # Then every reader takes a little: the streams move, the proxy did not buffer them.
        for s in socks:
            s.settimeout(5)
            assert s.recv(4096)
        print(f"FIGURE slow readers: RSS {rss_before:.1f} MiB before, {peak:.1f} MiB at most "
              f"with 100 unread streams")
        assert peak - rss_before < 32 * MEMORY_SCALE, (rss_before, peak)
        assert http("GET", p.url + "/health")[0] == 200
    finally:
        for s in socks:
            s.close()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_slowloris_2000_trickling_heads_do_not_starve_a_normal_client(proxy):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    port = free_port()
    p = proxy(sim_config(port, "--itl", "1ms", wake="20s",
                         top="limits: {max_connections: 2100, header_timeout: 3s}"))
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    rss_before = rss_mib(p.pid)
    slow = []
    worst = 0.0
    try:
        for _ in range(2000):
            s = socket.create_connection(("127.0.0.1", p.port))
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
            slow.append(s)
        for i in range(4):  # a byte each, every half second: never a whole head
            for s in slow:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
            t0 = time.monotonic()
            code, _, _ = http("POST", p.url + "/v1/chat/completions", CHAT, None, 10)
            assert code == 200
            worst = max(worst, time.monotonic() - t0)
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.5)
        grown = rss_mib(p.pid) - rss_before
        print(f"FIGURE slowloris: 2000 trickling connections; a normal request took at most "
              f"{worst * 1000:.0f} ms; RSS grew {grown:.1f} MiB")
        assert grown < 48 * MEMORY_SCALE
        # header_timeout (3 s) has passed for all of them: each got 408 and was closed.
        closed = 0
        for s in slow:
            s.settimeout(5)
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data.startswith(b"HTTP/1.1 408") or not data:
                closed += 1
        assert closed == 2000
    finally:
        for s in slow:
            s.close()
    eventually(lambda: http("GET", p.admin_url + "/metrics")[0] == 200, 5, "admin")
