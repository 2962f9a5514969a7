"""Upgrade (WebSocket, vLLM's /v1/realtime): after the upstream's 101 the proxy tunnels bytes both
ways until either side closes."""

import socket

from proxy import config_yaml, backend_yaml
from support import RawUpstream, read_head, serve_requests


def upgrade_upstream(seen):
    """Answers /health with 200; answers an Upgrade request with 101, then echoes every byte
    back upper-cased until the client closes."""

    def tunnel(conn, head, rest):
        seen.append(head.decode())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n")
        if rest:
            conn.sendall(rest.upper())
        while (part := conn.recv(4096)):
            conn.sendall(part.upper())
        return None

    return RawUpstream(lambda conn: serve_requests(conn, tunnel))


def test_an_upgrade_is_tunnelled_both_ways_after_101(proxy):
    seen = []
    srv = upgrade_upstream(seen)
    port = srv.port
    try:
        p = proxy(config_yaml(backend_yaml("rt", port, ["m"], static=True, default=True,
                                           extra="    health: { interval: 100ms }\n")))
        p.wait_state("ready", "rt")
        with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
            s.sendall(b"GET /v1/realtime HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            head, rest = read_head(s)  # the 101
            lines = head.decode().lower().split("\r\n")
            assert lines[0].startswith("http/1.1 101"), head
            assert "upgrade: websocket" in lines
            assert any(l.startswith("connection:") and "upgrade" in l and "close" not in l
                       for l in lines), lines
            for word in (b"hello", b"realtime", b"audio"):
                s.sendall(word)
                got = rest
                rest = b""
                while len(got) < len(word):
                    got += s.recv(4096)
                assert got == word.upper()
        # The upstream saw the upgrade headers it needs.
        assert "upgrade: websocket" in seen[0].lower()
        assert "connection: upgrade" in seen[0].lower()
    finally:
        srv.close()
