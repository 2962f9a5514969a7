"""`threads: 2`: the core scenarios hold when sessions and the controller run on two threads."""

import concurrent.futures as cf
import http.client as httpclient
import json
import os
import time

from proxy import sim_config
from support import CHAT, free_port, http, metrics, sse_events, wait_pid_gone


def config(port, delay="1s", idle="60s", itl="1ms"):
    return sim_config(port, "--startup-delay", delay, "--itl", itl, idle=idle, top="threads: 2")


def test_two_threads_hold_100_concurrent_requests_through_one_wake(proxy):
    port = free_port()
    p = proxy(config(port, delay="1s"))
    assert p.backend()["state"] == "asleep"
    n = 100
    with cf.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(
            lambda _: http("POST", p.url + "/v1/chat/completions", CHAT, None, 60), range(n)))
    assert [r[0] for r in results] == [200] * n
    assert all(json.loads(r[2])["object"] == "chat.completion" for r in results)
    assert len(p.started_pids()) == 1
    p.settle()  # accounted after the last byte, which the client may read first
    m = metrics(p.admin_url)
    assert m['vllm_autoscaler_wakes_total{backend="sim",result="success"}'] == 1
    assert m['vllm_autoscaler_requests_total{backend="sim",code="200"}'] == n
    b = p.backend()
    assert b["state"] == "ready" and b["in_flight"] == 0 and b["pending"] == 0


def cpu_ticks(pid: int) -> dict[str, int]:
    """User + system clock ticks of the main thread ("main") and of the threads named io-N."""
    ticks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            stat = f.read()
        name = "main" if int(tid) == pid else stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()  # from field 3 (state) on
        if name == "main" or name.startswith("io-"):
            ticks[name] = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


def test_two_threads_each_serve_connections(proxy):
    # Connections go to the two I/O threads in turn: under load from 4 keep-alive clients, the
    # second thread (io-1) works as well as the first (the main thread).
    p = proxy(config(free_port()))
    # The `listening` line comes before the I/O threads start; an answer from the admin port comes
    # after they are named.
    assert p.backend()["state"] == "asleep"
    before = cpu_ticks(p.pid)
    assert sorted(before) == ["io-1", "main"], before
    host, port = p.url.removeprefix("http://").rsplit(":", 1)

    def client(_):
        conn = httpclient.HTTPConnection(host, int(port), timeout=10)
        answered = 0
        end = time.monotonic() + 2
        while time.monotonic() < end:
            conn.request("GET", "/health")
            r = conn.getresponse()
            r.read()
            answered += r.status == 200
        conn.close()
        return answered

    with cf.ThreadPoolExecutor(4) as pool:
        answered = list(pool.map(client, range(4)))
    assert all(n > 100 for n in answered), answered
    after = cpu_ticks(p.pid)
    assert after["io-1"] > before["io-1"] and after["main"] > before["main"], (before, after)


def test_two_threads_relay_concurrent_streams_event_by_event(proxy):
    port = free_port()
    p = proxy(config(port, delay="0", itl="50ms"))
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    tokens = 20
    body = {**CHAT, "max_tokens": tokens, "stream": True}
    with cf.ThreadPoolExecutor(8) as pool:
        streams = list(pool.map(lambda _: sse_events(p.url + "/v1/chat/completions", body),
                                range(8)))
    for events in streams:
        assert events[-1][1] == "[DONE]"
        assert len(events) == tokens + 2
        contents = [json.loads(d)["choices"][0]["delta"].get("content") for _, d in events[1:-1]]
        assert contents == [f"tok{i} " for i in range(tokens)]
        times = [t for t, _ in events[1:-1]]
        assert times[-1] - times[0] >= 0.7 * (tokens - 1) * 0.05  # spread, not one burst
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert sum(g >= 0.025 for g in gaps) >= 0.75 * len(gaps), gaps
    p.settle()  # every stream accounted as ended
    assert len(p.started_pids()) == 1


def test_two_threads_stop_the_idle_backend_and_wake_it_again(proxy):
    port = free_port()
    idle = 1.5
    p = proxy(config(port, delay="0", idle="1500ms"))
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    ended = time.monotonic()
    [pid] = p.started_pids()
    deadline = ended + idle + 5
    while p.backend()["state"] == "ready":
        assert time.monotonic() < deadline, p.status()
        time.sleep(0.02)
    stopped = time.monotonic()
    assert 0.8 * idle <= stopped - ended <= idle + 3, stopped - ended
    p.wait_state("asleep", timeout=10)
    wait_pid_gone(pid, timeout=5)
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    assert len(p.started_pids()) == 2
