"""A client that stops reading, and a tunnel that goes quiet, do not keep a backend awake
(issue 16, defect 5). limits.send_timeout is nginx's: the time allowed between two writes to the
client that make progress, never a limit on the whole response. A tunnel with no byte either way
for backends[].upstream_timeout is closed. Either way the request's lease is released: in_flight
returns to 0 and the backend can sleep."""

import json
import pathlib
import socket
import time

from proxy import backend_yaml, config_yaml, sim_config
from support import (RawUpstream, chat, eventually, free_port, metrics, read_head,
                     read_until_closed, serve_requests, sse_events)

SEND_TIMEOUT = 2.0


def stream_request(body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(data)) + data


def small_window_connection(port: int) -> socket.socket:
    """A connection to 127.0.0.1:`port` whose receive buffer (and so its TCP window) is as small
    as the kernel allows, set before connect so the window is small from the handshake on."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    return s


def sim_aborts(port: int) -> float:
    return metrics(f"http://127.0.0.1:{port}/metrics")[
        'vllm:request_success_total{finished_reason="abort",model_name="sim-model"}']


def test_a_client_that_stops_reading_is_cut_after_send_timeout_and_the_backend_sleeps(proxy):
    port = free_port()
    idle = 2.0
    p = proxy(sim_config(port, "--itl", "0", top="limits: { send_timeout: 2s }", idle="2s",
                         wake="20s"))
    # A generation far longer than every buffer between the sim and the client: the relay must
    # end up waiting for a client that never reads.
    s = small_window_connection(p.port)
    try:
        sent = time.monotonic()
        s.sendall(stream_request(chat(max_tokens=1_000_000, stream=True)))
        eventually(lambda: p.backend()["in_flight"] == 1, timeout=20, what="the request forwarded")
        # The client never reads. The proxy gives up send_timeout after its last write that made
        # progress, and releases the lease.
        released = eventually(lambda: p.backend()["in_flight"] == 0 and time.monotonic(),
                              timeout=30, what="in_flight back to 0")
        assert released - sent >= SEND_TIMEOUT * 0.9
        [cut] = p.events("client stopped reading")
        assert cut["backend"] == "sim"
        assert cut["level"] == "warning"
        m = metrics(p.admin_url)
        assert m['vllm_autoscaler_client_send_timeouts_total{backend="sim"}'] == 1
        # The upstream connection was closed, not pooled: the sim aborted the generation.
        eventually(lambda: sim_aborts(port) == 1, timeout=10, what="the sim's abort")
        # The client's connection is closed (reset): what it reads now is the start of the stream,
        # never its end, and the read ends.
        s.settimeout(10)
        got = read_until_closed(s)
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
        assert b"[DONE]" not in got
    finally:
        s.close()
    # Nothing else holds the backend: it sleeps idle_timeout after the cut.
    asleep = p.wait_state("asleep", timeout=idle + 15)
    assert asleep - released >= idle * 0.8
    assert metrics(p.admin_url)['vllm_autoscaler_scale_downs_total{backend="sim",reason="idle"}'] == 1


def test_a_slow_but_steady_reader_gets_the_whole_stream(proxy):
    """The reader takes 256 KiB every quarter of a second, slower than the sim writes: the relay
    waits on the client again and again, several send_timeouts in all, yet nothing is cut, since
    every read lets a write make progress. (The proxy's send buffer on loopback grows to
    tcp_wmem's maximum, 4 MiB by default: the response is made twice that and more, so that the
    relay does wait.)"""
    port = free_port()
    # About 230 bytes of SSE each: 9 MB, and more where the kernel lets a send buffer grow larger.
    tokens = max(40_000, 2 * send_buffer_max() // 230)
    p = proxy(sim_config(port, "--itl", "0", top="limits: { send_timeout: 2s }"))
    # Woken first, so that the timing below is the relay's alone.
    assert sse_events(p.url + "/v1/chat/completions", chat(1, stream=True))[-1][1] == "[DONE]"
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 * 1024)
    s.connect(("127.0.0.1", p.port))
    try:
        started = time.monotonic()
        s.sendall(stream_request(chat(max_tokens=tokens, stream=True)))
        s.settimeout(15)
        parts = []
        while not (parts and parts[-1].endswith(b"0\r\n\r\n")):
            time.sleep(0.25)
            part = s.recv(256 * 1024)
            assert part, f"closed after {sum(map(len, parts))} bytes"
            parts.append(part)
        took = time.monotonic() - started
    finally:
        s.close()
    head, body = b"".join(parts).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    events = dechunk(body).split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    contents = [json.loads(e[len(b"data: "):])["choices"][0]["delta"]["content"]
                for e in events[1:-2]]
    assert contents == [f"tok{i} " for i in range(tokens)]
    assert p.events("client stopped reading") == []
    # The relay itself (head to last byte) took several send_timeouts: a limit on the whole
    # response would have cut it.
    [line] = [l for l in p.events("request") if l["bytes"] > 1_000_000]
    assert line["status"] == 200
    assert line["duration_ms"] > 2 * SEND_TIMEOUT * 1000, (line, took)
    p.settle()


def send_buffer_max() -> int:
    """The largest a TCP send buffer grows to by itself (tcp_wmem's maximum)."""
    return int(pathlib.Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked body (`body` ends with its last chunk)."""
    out = []
    at = 0
    while True:
        eol = body.index(b"\r\n", at)
        n = int(body[at:eol], 16)
        if n == 0:
            return b"".join(out)
        out.append(body[eol + 2:eol + 2 + n])
        at = eol + 2 + n + 2


def echo_upstream(closed):
    """Answers an Upgrade request with 101, then echoes every byte back upper-cased; appends the
    monotonic time to `closed` when the proxy closes the tunnel's upstream side."""

    def tunnel(conn, head, rest):
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n")
        if rest:
            conn.sendall(rest.upper())
        try:
            while (part := conn.recv(4096)):
                conn.sendall(part.upper())
        finally:
            closed.append(time.monotonic())
        return None

    return RawUpstream(lambda conn: serve_requests(conn, tunnel))


UPGRADE = (b"GET /v1/realtime HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


def tunnel_proxy(proxy, port):
    """A proxy in front of the static upstream on `port` with `upstream_timeout: 2s`, ready."""
    p = proxy(config_yaml(backend_yaml(
        "rt", port, ["m"], static=True, default=True,
        extra="    upstream_timeout: 2s\n    health: { interval: 100ms }\n")))
    p.wait_state("ready", "rt")
    return p


def upgrade(s):
    """Sends the Upgrade request on `s`: (the 101's head, what came after it)."""
    s.sendall(UPGRADE)
    head, rest = read_head(s)
    assert head.startswith(b"HTTP/1.1 101"), head
    return head, rest


def test_an_idle_tunnel_is_closed_after_upstream_timeout_and_its_lease_released(proxy):
    closed = []
    srv = echo_upstream(closed)
    upstream_timeout = 2.0
    try:
        p = tunnel_proxy(proxy, srv.port)
        with socket.create_connection(("127.0.0.1", p.port), timeout=15) as s:
            head, rest = upgrade(s)
            assert p.backend("rt")["in_flight"] == 1
            # A tunnel that talks is never cut, however long it lasts: a word every 0.6 s for
            # twice upstream_timeout.
            talk_until = time.monotonic() + 2 * upstream_timeout
            while time.monotonic() < talk_until:
                s.sendall(b"ping")
                got = rest
                rest = b""
                while len(got) < 4:
                    got += s.recv(4096)
                quiet = time.monotonic()  # the last byte either way, so far
                assert got == b"PING"
                time.sleep(0.6)
            # Then silence both ways: closed, both sides, upstream_timeout after the last byte.
            assert read_until_closed(s) == b""
            cut = time.monotonic()
        assert upstream_timeout * 0.9 <= cut - quiet <= upstream_timeout + 5, cut - quiet
        eventually(lambda: closed, timeout=5, what="the upstream side closed")
        eventually(lambda: p.backend("rt")["in_flight"] == 0, timeout=5, what="in_flight 0")
        [line] = p.events("tunnel idle")
        assert line["backend"] == "rt"
    finally:
        srv.close()


def test_a_half_closed_tunnel_left_open_by_the_client_is_closed_after_upstream_timeout(proxy):
    """The upstream ends its side at once; the client neither sends nor closes: the idle clock now
    watches the client's side, and the tunnel is closed upstream_timeout after the last byte."""
    closed = []

    def tunnel(conn, head, rest):
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)
        try:
            while conn.recv(4096):
                pass
        finally:
            closed.append(time.monotonic())
        return None

    srv = RawUpstream(lambda conn: serve_requests(conn, tunnel))
    try:
        p = tunnel_proxy(proxy, srv.port)
        with socket.create_connection(("127.0.0.1", p.port), timeout=15) as s:
            head, rest = upgrade(s)
            assert rest == b"" and s.recv(4096) == b""  # the upstream's half-close, passed on
            quiet = time.monotonic()
            # The client keeps its socket open and silent.
            released = eventually(lambda: p.backend("rt")["in_flight"] == 0 and time.monotonic(),
                                  timeout=15, what="in_flight 0")
            assert 2.0 * 0.9 <= released - quiet <= 2.0 + 5, released - quiet
            eventually(lambda: closed, timeout=5, what="the upstream side closed")
        [line] = p.events("tunnel idle")
        assert line["backend"] == "rt"
    finally:
        srv.close()
