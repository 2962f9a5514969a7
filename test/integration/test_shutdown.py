"""SIGTERM: stop accepting, let in-flight streams finish, answer held requests, stop the child."""

import concurrent.futures as cf
import json
import os
import signal
import socket
import threading
import time

from proxy import sim_command
from support import free_port, http, sse_events

CHAT = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def config(port, sim_args=("--itl", "1ms")):
    return f"""
limits: {{ shutdown_timeout: 20s }}
backends:
  - name: sim
    models: ["sim-model"]
    upstream: http://127.0.0.1:{port}
    idle_timeout: 60s
    wake_timeout: 30s
    scaler:
      type: process
      command: {sim_command(port, "sim-model", *sim_args)}
      stop_timeout: 5s
"""


def started_pids(p):
    return [e["pid"] for e in p.events("backend process started")]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def refuses(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


def eventually(check, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not seen within {timeout}s"
        time.sleep(0.02)


def test_sigterm_lets_an_in_flight_stream_finish_then_stops_the_backend_and_exits_0(proxy):
    port = free_port()
    p = proxy(config(port, sim_args=("--itl", "100ms")))
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    [pid] = started_pids(p)

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
        eventually(lambda: refuses(p.port), 2, "the public port refusing connections")
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
        [pid] = started_pids(p)
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
