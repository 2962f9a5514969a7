"""Request bodies stream upstream: a large body with a Content-Length for a ready backend reaches
the upstream while the client is still sending it (observed by a raw-socket upstream that records
what arrives); a chunked one is read whole first."""

import json
import socket
import threading

import pytest

from support import RawUpstream, serve_requests

MIB = 1024 * 1024


class RecordingUpstream:
    """A minimal HTTP/1.1 upstream: answers /health, and for other requests records when body
    bytes first arrive and how many arrived in total."""

    def __init__(self):
        self.first_body_bytes = threading.Event()
        self.received = []
        self.server = RawUpstream(self._handle)
        self.port = self.server.port

    def close(self):
        self.server.close()

    def _handle(self, conn):
        serve_requests(conn, self._request)

    def _request(self, conn, head, data):
        lines = head.decode().split("\r\n")
        path = lines[0].split()[1]
        headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip()
                   for l in lines[1:]}
        if data:
            self.first_body_bytes.set()
        want = int(headers.get("content-length", "0"))  # the proxy never sends a chunked body
        while len(data) < want:
            chunk = conn.recv(MIB)
            if not chunk:
                return None
            self.first_body_bytes.set()
            data += chunk
        self.received.append({"path": path, "size": want, "headers": headers})
        answer = json.dumps({"received": want}).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(answer), answer))
        return data[want:]


def read_response(sock) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([l for l in head.decode().split("\r\n") if l.lower().startswith("content-length")][0]
                 .split(":")[1])
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body


def config(upstream_port):
    return f"""
limits: {{max_body_bytes: 8388608}}
backends:
  - name: rec
    models: ["m"]
    default: true
    upstream: http://127.0.0.1:{upstream_port}
    health: {{interval: 100ms}}
"""


@pytest.fixture
def recorded(proxy):
    """A ready proxy in front of a RecordingUpstream; yields (proxy, upstream)."""
    up = RecordingUpstream()
    try:
        p = proxy(config(up.port))
        p.wait_state("ready")
        yield p, up
    finally:
        up.close()


def body_of(size):
    filler = "x" * (size - 40)
    return json.dumps({"model": "m", "prompt": filler}).encode()


def test_a_large_body_reaches_the_upstream_before_the_client_finished_sending(recorded):
    p, up = recorded
    body = body_of(4 * MIB)
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        s.sendall(body[: 2 * MIB])
        # The proxy passes body bytes on while the rest is still to come.
        assert up.first_body_bytes.wait(10), "the upstream saw no body byte before the end"
        assert up.received == []
        s.sendall(body[2 * MIB:])
        status, answer = read_response(s)
    assert status == 200
    assert json.loads(answer) == {"received": len(body)}


def test_a_chunked_body_is_read_whole_then_sent_with_a_content_length(recorded):
    # Not streamed: a malformed chunk must be refused before any byte reaches the upstream
    # (test_smuggling.py), so the upstream gets the whole body, de-chunked, at the end.
    p, up = recorded
    body = body_of(3 * MIB)
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        half = len(body) // 2
        s.sendall(b"%x;ext=1\r\n%s\r\n" % (half, body[:half]))
        assert not up.first_body_bytes.wait(1), "the upstream got body bytes before the end"
        rest = body[half:]
        s.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        status, answer = read_response(s)
    assert status == 200
    assert json.loads(answer) == {"received": len(body)}
    headers = up.received[0]["headers"]
    assert headers.get("content-length") == str(len(body))
    assert "transfer-encoding" not in headers


def test_a_streamed_body_over_the_limit_is_refused_with_413(recorded):
    p, up = recorded
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"y" * MIB
        try:
            for _ in range(9):
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        except OSError:
            pass  # the proxy may stop reading once the limit is passed
        status, answer = read_response(s)
    assert status == 413
    assert json.loads(answer)["error"]["code"] == 413
    assert up.received == []  # never completed upstream
