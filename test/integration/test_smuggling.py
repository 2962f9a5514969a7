"""Request smuggling: requests whose framing two HTTP parsers could read differently are refused
with 400 before any byte of them reaches the backend, and the ones that are accepted reach it in
one plain form (Content-Length, never chunked). A raw-socket backend records every byte it gets."""

import socket
import threading

import pytest

from proxy import backend_yaml, config_yaml
from support import RawUpstream, read_body, serve_requests

BODY = b'{"model":"m","messages":[]}'
CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"


class Recorder:
    """Answers every request with a small 200 and records the bytes of each connection."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []  # (head, body) as received
        self.server = RawUpstream(self._handle)
        self.port = self.server.port

    def _handle(self, conn):
        serve_requests(conn, self._request)

    def _request(self, conn, head, data):
        if (got := read_body(conn, head, data)) is None:
            return None
        body, rest = got
        with self.lock:
            self.requests.append((head, body))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
        return rest

    def seen(self):
        with self.lock:
            return list(self.requests)


@pytest.fixture
def smuggle(proxy):
    up = Recorder()
    p = proxy(config_yaml(backend_yaml("b", up.port, ["m"], static=True),
                          top="limits: {max_header_bytes: 8192}"))
    p.wait_state("ready")
    yield p, up
    up.server.close()


def exchange(port, raw) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while True:
            try:
                part = s.recv(65536)
            except OSError:
                break
            if not part:
                break
            data += part
            if b"\r\n\r\n" in data and data.startswith(b"HTTP/1.1 4"):
                break
    return data


REFUSED = {
    "content-length and transfer-encoding":
        CHAT + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % len(BODY),
    "two different content-lengths":
        CHAT + b"Content-Length: %d\r\nContent-Length: 5\r\n\r\n%s" % (len(BODY), BODY),
    "obs-fold":
        CHAT + b"X-A: a\r\n b\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
    "obs-fold with a tab":
        CHAT + b"X-A: a\r\n\tTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n%s"
        % (len(BODY), BODY),
    "bare LF line endings":
        b"POST /v1/chat/completions HTTP/1.1\nHost: x\nContent-Length: %d\n\n%s" % (len(BODY), BODY),
    "a bad chunk size":
        CHAT + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "a chunk size that overflows":
        CHAT + b"Transfer-Encoding: chunked\r\n\r\n1" + b"0" * 20 + b"\r\nabc\r\n0\r\n\r\n",
    "a huge chunk extension":
        CHAT + b"Transfer-Encoding: chunked\r\n\r\n%x;" % len(BODY) + b"a" * 100_000
        + b"\r\n" + BODY + b"\r\n0\r\n\r\n",
    "transfer-encoding identity":
        CHAT + b"Transfer-Encoding: identity\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
    "transfer-encoding chunked, then gzip":
        CHAT + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_ambiguous_framing_is_refused_with_400_and_never_forwarded(smuggle, case):
    p, up = smuggle
    answer = exchange(p.port, REFUSED[case])
    assert answer.startswith(b"HTTP/1.1 400 "), (case, answer[:200])
    assert b'"code":400' in answer
    assert up.seen() == [], case
    # The proxy lives on: a plain request still goes through.
    ok = exchange(p.port, CHAT + b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                  % (len(BODY), BODY))
    assert ok.startswith(b"HTTP/1.1 200 ")


def test_the_obs_fold_refusal_says_why(smuggle):
    p, _ = smuggle
    answer = exchange(p.port, REFUSED["obs-fold"])
    assert b"obs-fold" in answer


def test_accepted_framings_reach_the_backend_in_one_plain_form(smuggle):
    p, up = smuggle
    half = len(BODY) // 2
    accepted = [
        # The same length twice is one length (RFC 9110 §8.6).
        CHAT + b"Content-Length: %d, %d\r\n\r\n%s" % (len(BODY), len(BODY), BODY),
        # Chunked, with a short extension and a trailer: de-chunked, sent with a Content-Length.
        CHAT + b"Transfer-Encoding: chunked\r\n\r\n%x;a=b\r\n%s\r\n%x\r\n%s\r\n0\r\nX-T: 1\r\n\r\n"
        % (half, BODY[:half], len(BODY) - half, BODY[half:]),
    ]
    for raw in accepted:
        answer = exchange(p.port, raw.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"))
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    seen = up.seen()
    assert len(seen) == 2
    for head, body in seen:
        fields = [l.split(b":", 1)[0].strip().lower() for l in head.split(b"\r\n")[1:]]
        assert fields.count(b"content-length") == 1, head
        assert b"transfer-encoding" not in fields, head
        assert b"Content-Length: %d" % len(BODY) in head, head
        assert body == BODY
