"""SIGTERM: stop accepting, let in-flight streams finish, answer held requests, stop the child."""

import concurrent.futures as cf
import json
import os
import signal
import threading
import time

from proxy import sim_config
from support import CHAT, eventually, free_port, http, pid_alive, refused, sse_events


def config(port, sim_args=("--itl", "1ms")):
    return sim_config(port, *sim_args, top="limits: { shutdown_timeout: 20s }")


def test_sigterm_lets_an_in_flight_stream_finish_then_stops_the_backend_and_exits_0(proxy):
    port = free_port()
    p = proxy(config(port, sim_args=("--itl", "100ms")))
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    [pid] = p.started_pids()

    tokens = 25  # 2.5 s
    first_events = threading.Event()
    result = {}

    def stream():
        # sse_events reads the whole stream; the watcher below signals once it is under way.
        result["events"] = sse_events(p.url + "/v1/chat/completions",
                                      {**CHAT, "max_tokens": tokens, "stream": True})
        result["ended"] = time.monotonic()

    def watch():
        eventually(lambda: p.backend()["in_flight"] == 1, 10, "the stream in flight")
        time.sleep(0.3)  # a few events out
        first_events.set()

    with cf.ThreadPoolExecutor(2) as pool:
        streaming = pool.submit(stream)
        pool.submit(watch).result()
        assert first_events.is_set()
        os.kill(p.pid, signal.SIGTERM)
        signalled = time.monotonic()
        # New connections are refused soon, while the stream goes on.
        eventually(lambda: refused(p.port), 2, "the public port refusing connections")
        refused_at = time.monotonic()
        assert p.alive()
        code, _, _ = http("GET", p.admin_url + "/readyz")
        assert code == 503  # draining
        streaming.result(timeout=30)

    events = result["events"]
    assert events[-1][1] == "[DONE]"
    assert len(events) == tokens + 2
    contents = [json.loads(d)["choices"][0]["delta"].get("content") for _, d in events[1:-1]]
    assert contents == [f"tok{i} " for i in range(tokens)]
    assert refused_at < result["ended"]  # the port closed while the stream still ran

    assert p.wait(timeout=20) == 0
    assert result["ended"] - signalled >= 0.5
    eventually(lambda: not pid_alive(pid), 5, "the backend process gone")
    assert len(p.events("stopping backend process")) == 1


def test_requests_held_during_sigterm_get_503_and_the_starting_backend_is_stopped(proxy):
    port = free_port()
    p = proxy(config(port, sim_args=("--startup-delay", "30s")))
    n = 5
    with cf.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(http, "POST", p.url + "/v1/chat/completions", CHAT, None, 30)
                   for _ in range(n)]
        eventually(lambda: p.backend()["pending"] == n, 10, f"{n} held requests")
        [pid] = p.started_pids()
        os.kill(p.pid, signal.SIGTERM)
        signalled = time.monotonic()
        results = [f.result() for f in futures]
        answered = time.monotonic()
    assert answered - signalled < 3
    for code, headers, body in results:
        assert code == 503
        assert headers.get("retry-after", "").isdigit()
        err = json.loads(body)["error"]
        assert err["code"] == 503
        assert "shutting down" in err["message"], err
    assert p.wait(timeout=20) == 0
    eventually(lambda: not pid_alive(pid), 5, "the starting backend process gone")


def test_sigterm_with_idle_keep_alive_connections_exits_0_at_once(proxy):
    """Idle keep-alive clients (an Ingress pool, a Prometheus scraper) must neither hold the exit
    nor outlive what their sessions refer to (the ASan run of this test checks the latter)."""
    import socket

    port = free_port()
    p = proxy(config(port))
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    idle = []
    for target_port, path in [(p.port, b"/health")] * 5 + [(p.admin_port, b"/healthz")] * 2:
        s = socket.create_connection(("127.0.0.1", target_port), timeout=10)
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        idle.append(s)
    t0 = time.monotonic()
    code = p.stop(signal.SIGTERM, timeout=10)
    took = time.monotonic() - t0
    assert code == 0
    assert took < 3, took
    for s in idle:
        assert s.recv(4096) == b""  # closed by the proxy, not left hanging
        s.close()
