"""The hop into the proxy: a balancer (ingress-nginx, ALB: 60 s; GCLB: 600 s) keeps idle
keep-alive connections to us open and sends its next request on one whenever it likes. The proxy
keeps an idle client connection for limits.keepalive_timeout (75 s by default), longer than those,
so that it never closes one as a request is sent on it; limits.header_timeout bounds only a head
that has begun (and the first one of a connection)."""

import json
import socket
import threading
import time

from proxy import sim_config
from support import free_port, read_until_closed

MODELS = b"GET /v1/models HTTP/1.1\r\nHost: proxy\r\n\r\n"


def config(limits=""):
    return sim_config(free_port(), "--itl", "1ms", top=f"limits: {{ {limits} }}" if limits else "")


def exchange(s, request=MODELS):
    """Sends `request` on `s` and reads one whole answer (Content-Length framed); returns its
    status line and body. A reset or close instead of an answer fails the test."""
    s.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        part = s.recv(65536)
        assert part, f"the proxy closed the connection instead of answering: {data!r}"
        data += part
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        part = s.recv(65536)
        assert part, "the proxy closed the connection mid-answer"
        body += part
    return head.split(b"\r\n", 1)[0], body


def test_a_connection_reused_after_30_s_and_after_70_s_idle_is_served(proxy):
    """With the defaults (header_timeout 10 s, keepalive_timeout 75 s): what a balancer with a
    60 s idle timeout does. Before keepalive_timeout the proxy closed these at 10 s."""
    p = proxy(config())
    a = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    b = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    for s in (a, b):
        status, _ = exchange(s)
        assert status == b"HTTP/1.1 200 OK"
    t0 = time.monotonic()
    errors = []

    def reuse(s, after):
        time.sleep(max(0.0, t0 + after - time.monotonic()))
        try:
            status, body = exchange(s, MODELS)
            assert status == b"HTTP/1.1 200 OK", status
            assert json.loads(body)["data"][0]["id"] == "sim-model"
        except (AssertionError, OSError) as e:
            errors.append(f"after {after} s idle: {e!r}")

    threads = [threading.Thread(target=reuse, args=(a, 30)),
               threading.Thread(target=reuse, args=(b, 70))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.close()
    b.close()
    assert errors == []


def test_an_idle_connection_is_closed_quietly_after_keepalive_timeout(proxy):
    p = proxy(config("keepalive_timeout: 1s, header_timeout: 10s"))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    exchange(s)
    t0 = time.monotonic()
    assert read_until_closed(s) == b""  # no 408 for a connection that sent nothing more
    took = time.monotonic() - t0
    s.close()
    assert 0.8 <= took < 5, took


def test_a_head_begun_on_a_kept_alive_connection_gets_408_after_header_timeout(proxy):
    """keepalive_timeout is for silence between requests only: once the next head has begun,
    header_timeout bounds it (slowloris on a reused connection)."""
    p = proxy(config("keepalive_timeout: 60s, header_timeout: 1s"))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    exchange(s)
    time.sleep(1.5)  # idle longer than header_timeout: still open
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n")
    t0 = time.monotonic()
    reply = read_until_closed(s)
    took = time.monotonic() - t0
    s.close()
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == 408
    assert 0.8 <= took < 5, took


def test_the_first_head_of_a_connection_is_bounded_by_header_timeout(proxy):
    """A connection that never sends a byte is closed after header_timeout, not keepalive_timeout:
    connections cost a slot of limits.max_connections."""
    p = proxy(config("keepalive_timeout: 60s, header_timeout: 1s"))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    t0 = time.monotonic()
    assert read_until_closed(s) == b""
    took = time.monotonic() - t0
    s.close()
    assert 0.8 <= took < 5, took
    # and a request on a new connection is served
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    status, _ = exchange(s)
    s.close()
    assert status == b"HTTP/1.1 200 OK"
