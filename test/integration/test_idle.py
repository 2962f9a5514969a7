"""Scale to zero: the idle stop, counted from the end of the last response, and what is activity."""

import concurrent.futures as cf
import os
import signal
import threading
import time

from proxy import sim_config
from support import CHAT, free_port, http, metrics, pid_alive, refused, sse_events, wait_pid_gone


def config(port, idle="2s", sim_args=("--itl", "1ms"), stop_timeout="10s"):
    return sim_config(port, *sim_args, idle=idle, wake="20s", stop_timeout=stop_timeout)


def wait_not_ready(p, timeout):
    """Polls /status until the backend leaves `ready`; returns the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if p.backend()["state"] != "ready":
            return now
        assert now < deadline, f"backend still ready after {timeout}s: {p.status()}"
        time.sleep(0.02)


def wake_with_one_request(p):
    """POSTs CHAT, which wakes the backend; returns (monotonic time the answer ended, the pid of
    the one backend process)."""
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    ended = time.monotonic()
    [pid] = p.started_pids()
    return ended, pid


def assert_stopped_idle_after(stopped, ended, idle):
    """The backend left `ready` (at `stopped`) about `idle` seconds after the last response ended."""
    assert stopped - ended >= 0.8 * idle, stopped - ended
    assert stopped - ended <= idle + 3, stopped - ended


def test_the_backend_stops_idle_timeout_after_the_last_response_and_wakes_again(proxy):
    port = free_port()
    idle = 2.0
    p = proxy(config(port, idle="2s"))
    ended, pid = wake_with_one_request(p)
    assert pid_alive(pid)
    assert p.backend()["state"] == "ready"

    stopped = wait_not_ready(p, timeout=idle + 5)
    assert_stopped_idle_after(stopped, ended, idle)
    p.wait_state("asleep", timeout=10)
    wait_pid_gone(pid)
    m = metrics(p.admin_url)
    assert m['vllm_autoscaler_scale_downs_total{backend="sim",reason="idle"}'] == 1

    # The next request wakes it again: a new process, and an answer.
    code, headers, _ = http("POST", p.url + "/v1/chat/completions", CHAT)
    assert code == 200
    assert "wake;dur=" in headers.get("server-timing", "")
    pids = p.started_pids()
    assert len(pids) == 2 and pids[1] != pid
    assert pid_alive(pids[1])
    assert p.backend()["wakes"] == 2


def test_a_stream_longer_than_idle_timeout_is_not_cut_and_idle_counts_from_its_end(proxy):
    port = free_port()
    idle = 1.0
    tokens = 30  # 30 x 100 ms: three idle timeouts long
    p = proxy(config(port, idle="1s", sim_args=("--itl", "100ms")))
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200  # wake it first

    body = {**CHAT, "max_tokens": tokens, "stream": True}
    started = time.monotonic()
    events = sse_events(p.url + "/v1/chat/completions", body)
    ended = time.monotonic()
    assert ended - started >= 3 * idle * 0.9
    assert events[-1][1] == "[DONE]"
    assert len(events) == tokens + 2  # role, tokens, [DONE]
    assert len(p.started_pids()) == 1
    assert p.backend()["state"] == "ready"

    stopped = wait_not_ready(p, timeout=idle + 5)
    assert_stopped_idle_after(stopped, ended, idle)
    p.wait_state("asleep", timeout=10)
    assert len(p.started_pids()) == 1


def test_a_request_arriving_while_the_backend_stops_is_held_and_served_after_it_restarts(proxy):
    port = free_port()
    # On SIGTERM the sim stops listening at once but takes 2 s to exit.
    p = proxy(config(port, idle="1s", sim_args=("--shutdown-delay", "2s")))
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    [first] = p.started_pids()

    p.wait_state("stopping", timeout=10)
    sent = time.monotonic()
    code, headers, _ = http("POST", p.url + "/v1/chat/completions", CHAT, None, 30)
    answered = time.monotonic()
    assert code == 200
    assert "wake;dur=" in headers.get("server-timing", "")
    # Held until the old process was gone, then served by a new one.
    assert not pid_alive(first)
    assert answered - sent >= 0.5
    pids = p.started_pids()
    assert len(pids) == 2 and pids[1] != first
    msgs = [(e["msg"], e.get("pid"), e.get("to")) for e in p.log_lines()]
    assert msgs.index(("backend process exited", first, None)) < \
        msgs.index(("backend process started", pids[1], None))
    rewakes = [e for e in p.events("backend state")
               if e["from"] == "stopping" and e["to"] == "waking"]
    assert len(rewakes) == 1, p.events("backend state")
    assert p.backend()["state"] == "ready"


def hammer_non_activity(p, stop: threading.Event) -> int:
    """GETs the proxy's own routes and the admin routes until `stop` is set; returns the count.
    Every answer must be a 200 served by the proxy itself."""
    urls = [p.url + "/health", p.url + "/v1/models", p.admin_url + "/status",
            p.admin_url + "/metrics", p.admin_url + "/healthz", p.admin_url + "/readyz"]
    n = 0
    while not stop.is_set():
        for u in urls:
            code, _, _ = http("GET", u)
            assert code == 200, u
            n += 1
    return n


def hammer_in_background(p, seconds):
    stop = threading.Event()
    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer_non_activity, p, stop) for _ in range(4)]
        time.sleep(seconds)
        stop.set()
        return sum(f.result() for f in futures)


def test_health_models_and_admin_calls_never_wake_a_sleeping_backend(proxy):
    port = free_port()
    p = proxy(config(port))
    assert p.backend()["state"] == "asleep"
    n = hammer_in_background(p, 2.0)
    assert n >= 100
    b = p.backend()
    assert b["state"] == "asleep"
    assert b["wakes"] == 0
    m = metrics(p.admin_url)
    assert sum(v for k, v in m.items() if k.startswith("vllm_autoscaler_wakes_total")) == 0
    assert p.started_pids() == []
    assert refused(port), "something listens on the backend port"


def test_health_models_and_admin_calls_do_not_postpone_the_idle_stop(proxy):
    port = free_port()
    idle = 2.0
    p = proxy(config(port, idle="2s"))
    ended, pid = wake_with_one_request(p)

    stop = threading.Event()
    with cf.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(hammer_non_activity, p, stop) for _ in range(3)]
        try:
            stopped = wait_not_ready(p, timeout=idle + 5)
        finally:
            stop.set()
        assert sum(f.result() for f in futures) >= 50
    assert_stopped_idle_after(stopped, ended, idle)
    p.wait_state("asleep", timeout=10)
    wait_pid_gone(pid)
    assert len(p.started_pids()) == 1


def test_a_wedged_backend_is_stopped_at_idle_timeout_and_the_next_request_wakes_a_new_one(proxy):
    """Invariant (a) with the process scaler: an engine that hangs (SIGSTOP: the process holds its
    GPU, nothing answers) while idle is stopped idle_timeout after the last request, SIGKILLed
    after stop_timeout since it cannot handle SIGTERM, and the next request starts a new one."""
    port = free_port()
    idle = 2.0
    p = proxy(config(port, idle="2s", stop_timeout="1s"))
    ended, pid = wake_with_one_request(p)
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_pid_gone(pid, timeout=idle + 1 + 10)
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert time.monotonic() - ended >= 0.8 * idle
    p.wait_state("asleep", timeout=10)
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    pids = p.started_pids()
    assert len(pids) == 2 and pids[0] == pid and pid_alive(pids[1])
