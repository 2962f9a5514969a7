"""Hostile and broken clients over raw sockets: malformed HTTP (400), oversized heads (431) and
bodies (413), slow heads (408), connection floods (503). None of them wakes the backend or
disturbs the other connections."""

import concurrent.futures as cf
import http.client as httpclient
import json
import select
import socket
import threading
import time

from proxy import sim_config
from support import RawUpstream, chat, eventually, free_port, http, metrics, read_until_closed, sse_events

MAX_HEADER = 4096
MAX_BODY = 32768
CHAT = chat(2)


def config(port, limits, itl="1ms"):
    return sim_config(port, "--startup-delay", "200ms", "--itl", itl, top=f"limits: {{ {limits} }}")


LIMITS = f"max_header_bytes: {MAX_HEADER}, max_body_bytes: {MAX_BODY}, header_timeout: 1s"


def head(method="POST", target="/v1/chat/completions", headers=()):
    lines = [f"{method} {target} HTTP/1.1", "Host: proxy"] + list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(total, piece=4096):
    out = b""
    while total > 0:
        n = min(piece, total)
        out += b"%x\r\n" % n + b"x" * n + b"\r\n"
        total -= n
    return out + b"0\r\n\r\n"


MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"\r\n\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost proxy\r\n\r\n",
    b"GET /v1/models HTTP/2.7\r\nHost: proxy\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: proxy\r\nBad Header: y\r\n\r\n",
    b"GET /v1/mod\x00els HTTP/1.1\r\nHost: proxy\r\n\r\n",
    b"GET  /v1/models HTTP/1.1\r\nHost: proxy\r\n\r\n",
    head(headers=["Content-Length: abc"]),
    head(headers=["Content-Length: -1"]),
    head(headers=["Content-Length: 5", "Content-Length: 6"]) + b"hello!",
    head(headers=["Content-Length: 5", "Transfer-Encoding: chunked"]) + b"5\r\nhello\r\n0\r\n\r\n",
    head(headers=["Transfer-Encoding: chunked"]) + b"zz\r\nhello\r\n0\r\n\r\n",
    # A body whose length cannot be known (RFC 9112 §6.3): must not become the next request.
    head(headers=["Transfer-Encoding: chunked, gzip"]) + b"0\r\n\r\n",
    head(headers=["Transfer-Encoding: gzip"]) + b"GET /v1/models HTTP/1.1\r\n\r\n",
]

TOO_LARGE_HEAD = [
    head("GET", "/v1/models", ["X-Big: " + "a" * (MAX_HEADER + 100)]),
    head("GET", "/v1/models", [f"X-H{i}: {'b' * 40}" for i in range(200)]),
    head("GET", "/v1/models?q=" + "c" * (MAX_HEADER + 100)),
    head(headers=["Content-Length: 2", "X-Big: " + "d" * (MAX_HEADER * 4)]) + b"{}",
]

TOO_LARGE_BODY = [
    head(headers=["Content-Type: application/json", f"Content-Length: {MAX_BODY + 1}"])
    + b"{" + b" " * (MAX_BODY - 1) + b"}",
    head(headers=["Content-Length: 1000000000000"]),  # the body never comes: answered at once
    head(headers=["Content-Type: application/json", "Transfer-Encoding: chunked"])
    + chunked(MAX_BODY + 5000),
]


def exchange(port, data, timeout=10.0):
    """Sends `data` on a fresh connection and reads until the proxy closes it. Returns (reply,
    seconds until closed, closed?)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    t0 = time.monotonic()
    reply = b""
    closed = False
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before we finished sending
        while True:
            try:
                part = s.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            if not part:
                closed = True
                break
            reply += part
    except socket.timeout:
        pass
    finally:
        s.close()
    return reply, time.monotonic() - t0, closed


def assert_error(reply, closed, status):
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:200]
    head_end = reply.index(b"\r\n\r\n")
    headers = reply[:head_end].decode().lower()
    assert "connection: close" in headers
    body = reply[head_end + 4:]
    err = json.loads(body)["error"]
    assert err["code"] == status and err["param"] is None and err["message"]
    assert closed, "the connection was left open after the error"
    # Exactly one response: nothing of the bad request was taken as another request.
    assert reply.count(b"HTTP/1.1 ") == 1, reply


def run_bad_inputs(port):
    """Every bad input, each on its own connection, all at once; returns [(expected, reply...)]."""
    cases = ([(400, d) for d in MALFORMED] + [(431, d) for d in TOO_LARGE_HEAD]
             + [(413, d) for d in TOO_LARGE_BODY])
    with cf.ThreadPoolExecutor(len(cases)) as pool:
        replies = list(pool.map(lambda c: exchange(port, c[1]), cases))
    return [(status, *r) for (status, _), r in zip(cases, replies)]


def test_malformed_requests_get_400_and_close_without_a_wake(proxy):
    p = proxy(config(free_port(), LIMITS))
    for data in MALFORMED:
        reply, took, closed = exchange(p.port, data)
        assert_error(reply, closed, 400)
        assert took < 5
    p.assert_never_woken()


def test_heads_over_max_header_bytes_get_431_without_a_wake(proxy):
    p = proxy(config(free_port(), LIMITS))
    for data in TOO_LARGE_HEAD:
        reply, _, closed = exchange(p.port, data)
        assert_error(reply, closed, 431)
    # Just under the limit is fine (and needs no backend).
    status, _, _ = http("GET", p.url + "/v1/models", headers={"X-Big": "e" * (MAX_HEADER - 300)})
    assert status == 200
    p.assert_never_woken()


def test_bodies_over_max_body_bytes_get_413_without_a_wake(proxy):
    p = proxy(config(free_port(), LIMITS))
    for data in TOO_LARGE_BODY:
        reply, took, closed = exchange(p.port, data)
        assert_error(reply, closed, 413)
        assert took < 5
    # A Content-Length far over the limit is refused on the head alone, before any body byte.
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.sendall(head(headers=[f"Content-Length: {MAX_BODY * 1000}"]))
    t0 = time.monotonic()
    assert s.recv(65536).startswith(b"HTTP/1.1 413 ")
    assert time.monotonic() - t0 < 2
    s.close()
    p.assert_never_woken()
    # A body just under the limit is read and routed (here: to the 404 of an unknown model).
    body = json.dumps({"model": "nope", "pad": "f" * (MAX_BODY - 100)})
    assert len(body) <= MAX_BODY
    assert http("POST", p.url + "/v1/chat/completions", body,
                {"Content-Type": "application/json"})[0] == 404
    p.assert_never_woken()


def test_bad_input_does_not_disturb_a_concurrent_stream(proxy):
    p = proxy(config(free_port(), LIMITS, itl="25ms"))
    tokens = 120  # about 3 s of stream
    result = {}

    def stream():
        result["events"] = sse_events(p.url + "/v1/chat/completions",
                                      {**CHAT, "max_tokens": tokens, "stream": True})
        result["ended"] = time.monotonic()

    t = threading.Thread(target=stream)
    t.start()
    eventually(lambda: p.backend()["in_flight"] == 1, 30, "the stream in flight")

    outcomes = run_bad_inputs(p.port)
    bad_done = time.monotonic()
    # And a well-formed request on another connection is still served meanwhile.
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    t.join(60)
    assert not t.is_alive()

    for status, reply, _, closed in outcomes:
        assert_error(reply, closed, status)
    assert result["ended"] > bad_done, "the stream ended before the bad input was sent"
    payloads = [d for _, d in result["events"]]
    assert payloads[-1] == "[DONE]"
    contents = [json.loads(d)["choices"][0]["delta"].get("content") for d in payloads[:-1]]
    assert contents == [""] + [f"tok{i} " for i in range(tokens)]
    assert len(p.started_pids()) == 1
    p.settle()  # accounted once the last byte is written
    m = metrics(p.admin_url + "/metrics")
    assert m['vllm_autoscaler_requests_total{backend="sim",code="200"}'] == 2


def assert_408(reply):
    """README "Errors the client sees": a head not received within header_timeout gets 408, then the close."""
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == 408


def assert_408_after_header_timeout(s, t0):
    """Reads `s` until the proxy closes it, which must be about header_timeout (1 s) after `t0`,
    and checks the 408 it got before; closes `s`."""
    reply = read_until_closed(s)
    took = time.monotonic() - t0
    s.close()
    assert 0.8 <= took < 5, took
    assert_408(reply)


def test_a_head_not_finished_within_header_timeout_gets_408(proxy):
    p = proxy(config(free_port(), LIMITS))

    # Half a head, then silence.
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n")
    t0 = time.monotonic()
    assert_408_after_header_timeout(s, t0)

    # Slowloris: a byte every 100 ms never completes a head, and the deadline is for the whole
    # head, not per byte.
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    t0 = time.monotonic()
    drip = b"GET /v1/models HTTP/1.1\r\nHost: proxy\r\nX-Slow: " + b"z" * 200
    ended = False
    for byte in drip:
        try:
            s.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            ended = True
            break
        readable, _, _ = select.select([s], [], [], 0.1)
        if readable:
            ended = True
            break
    assert ended, "the proxy kept reading a head for 20 s"
    assert_408_after_header_timeout(s, t0)

    # A connection that never sends a byte is closed quietly.
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    t0 = time.monotonic()
    assert read_until_closed(s) == b""
    assert 0.8 <= time.monotonic() - t0 < 5
    s.close()

    # Nothing of it was a request; the port still serves.
    assert http("GET", p.url + "/v1/models")[0] == 200
    p.assert_never_woken()


def wait_open_connections(p, n, timeout=10):
    eventually(lambda: metrics(p.admin_url + "/metrics")["vllm_autoscaler_open_connections"] == n,
               timeout, f"{n} open connections")


def test_connections_over_max_connections_get_503_while_existing_ones_keep_working(proxy):
    limit = 20
    p = proxy(config(free_port(), f"max_connections: {limit}, header_timeout: 30s"))
    keep = [httpclient.HTTPConnection("127.0.0.1", p.port, timeout=30) for _ in range(2)]
    body = json.dumps(CHAT)
    json_type = {"Content-Type": "application/json"}
    keep[0].request("POST", "/v1/chat/completions", body, json_type)
    assert keep[0].getresponse().read() and p.backend()["state"] == "ready"
    keep[1].request("GET", "/v1/models")
    r = keep[1].getresponse()
    assert r.status == 200 and r.read()

    idle = []
    for _ in range(limit - 2):
        idle.append(socket.create_connection(("127.0.0.1", p.port), timeout=5))
    wait_open_connections(p, limit)

    def extra(_):
        t0 = time.monotonic()
        reply, _, closed = exchange(p.port, b"", timeout=10)
        return reply, time.monotonic() - t0, closed

    with cf.ThreadPoolExecutor(30) as pool:
        rejected = list(pool.map(extra, range(30)))
    for reply, took, closed in rejected:
        assert reply.startswith(b"HTTP/1.1 503 "), reply
        assert b"Retry-After: 1" in reply and b"max_connections" in reply
        assert closed and took < 3, took

    # The connections already open are served as before.
    for _ in range(3):
        keep[0].request("POST", "/v1/chat/completions", body, json_type)
        r = keep[0].getresponse()
        assert r.status == 200 and json.loads(r.read())["object"] == "chat.completion"
        keep[1].request("GET", "/v1/models")
        r = keep[1].getresponse()
        assert r.status == 200 and json.loads(r.read())["object"] == "list"
    for s in idle:
        s.close()
    for c in keep:
        c.close()
    # Once they are gone, new connections are accepted again.
    wait_open_connections(p, 0)
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    assert len(p.started_pids()) == 1


class HangUpUpstream:
    """A fake upstream on loopback: /health answers 200; any other request is read and then
    answered by `reply` (raw bytes, possibly none) before the connection is closed."""

    def __init__(self, reply):
        self.reply = reply
        self.requests = 0
        self.server = RawUpstream(self._handle)
        self.port = self.server.port

    def _handle(self, c):
        c.settimeout(5)
        data = c.recv(65536)
        if data.startswith(b"GET /health "):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        else:
            self.requests += 1
            c.sendall(self.reply)

    def close(self):
        self.server.close()


def test_an_upstream_that_hangs_up_or_answers_garbage_gets_502_and_the_proxy_lives_on(proxy):
    for reply in (b"", b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Le"):
        up = HangUpUpstream(reply)
        try:
            p = proxy(f"""
backends:
  - name: fake
    models: ["sim-model"]
    upstream: http://127.0.0.1:{up.port}
""")
            p.wait_state("ready", "fake")
            for _ in range(3):
                status, headers, body = http("POST", p.url + "/v1/chat/completions", CHAT)
                assert status == 502, (reply, status, body)
                err = json.loads(body)["error"]
                assert err["code"] == 502 and "fake" in err["message"]
            assert up.requests == 3
            assert p.alive() and http("GET", p.url + "/health")[0] == 200
            assert p.stop() == 0
        finally:
            up.close()
