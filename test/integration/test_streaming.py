"""Streaming relay: SSE event by event, client disconnects abort upstream, bodies and headers."""

import http.client as httpclient
import json
import socket
import subprocess
import time

from proxy import backend_yaml, config_yaml, sim_config
from support import (RawUpstream, chat, free_port, http, metrics, read_body, serve_requests,
                     sim_last_request)

CHAT_PATH = "/v1/chat/completions"


def config(upstream_port):
    """A proxy in front of an already running vllm-sim (static scaler: no wake involved)."""
    return sim_config(upstream_port, wake="10s", static=True)


def ready_proxy(proxy, sim_proc):
    p = proxy(config(sim_proc.port))
    code, _, _ = http("POST", p.url + CHAT_PATH, chat(1))
    assert code == 200
    return p


def raw_sse_lines(url, body, timeout=30):
    """POSTs `body` and returns (status, [(monotonic arrival time, line)]) for every line of the
    (de-chunked) response body, blank separator lines included, without the trailing newline."""
    u = url.removeprefix("http://")
    hostport, path = u.split("/", 1)
    host, port = hostport.split(":")
    conn = httpclient.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", "/" + path, body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        lines = []
        while True:
            raw = resp.readline()
            if not raw:
                break
            lines.append((time.monotonic(), raw.decode()))
        return resp.status, resp.getheader("content-type", ""), lines
    finally:
        conn.close()


def events_of(lines):
    """Checks the SSE framing (`data: <payload>\\n` then a blank line, nothing else) and returns
    [(arrival time, payload)]."""
    events = []
    for i in range(0, len(lines), 2):
        t, data = lines[i]
        assert data.startswith("data: ") and data.endswith("\n") and not data.endswith("\r\n"), data
        assert i + 1 < len(lines) and lines[i + 1][1] == "\n", lines[i: i + 2]
        events.append((t, data[len("data: "):-1]))
    return events


def sim_aborts(sim_proc):
    return metrics(sim_proc.url)[
        'vllm:request_success_total{finished_reason="abort",model_name="sim-model"}']


def test_sse_events_reach_the_client_one_by_one_as_the_backend_produces_them(proxy, sim):
    s = sim("--itl", "50ms")
    p = ready_proxy(proxy, s)
    tokens = 20

    code, ctype, direct_lines = raw_sse_lines(s.url + CHAT_PATH, chat(tokens, stream=True))
    assert code == 200
    code, proxied_ctype, proxied_lines = raw_sse_lines(p.url + CHAT_PATH, chat(tokens, stream=True))
    assert code == 200
    assert proxied_ctype == ctype and proxied_ctype.startswith("text/event-stream")

    direct = events_of(direct_lines)
    proxied = events_of(proxied_lines)
    # The role event, one event per token, [DONE]: the same sequence as straight from the sim.
    assert len(proxied) == len(direct) == tokens + 2
    assert proxied[-1][1] == "[DONE]"
    chunks = [json.loads(payload) for _, payload in proxied[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:]] == \
        [f"tok{i} " for i in range(tokens)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"

    direct_span = direct[-1][0] - direct[0][0]
    proxied_span = proxied[-1][0] - proxied[0][0]
    assert direct_span >= 0.7, direct_span  # 19 inter-token gaps of 50 ms
    assert proxied_span >= 0.7 * direct_span, (proxied_span, direct_span)
    # Not one burst at the end: most token events arrive separately, about one ITL apart.
    token_times = [t for t, _ in proxied[1:-1]]
    gaps = [b - a for a, b in zip(token_times, token_times[1:])]
    assert sum(g >= 0.025 for g in gaps) >= 0.75 * len(gaps), gaps
    assert len({round(t, 3) for t in token_times}) >= 0.75 * tokens


def test_client_disconnect_mid_stream_aborts_the_generation_upstream(proxy, sim):
    s = sim("--itl", "100ms")
    p = ready_proxy(proxy, s)
    assert sim_aborts(s) == 0

    body = json.dumps(chat(200, stream=True)).encode()  # 20 s if nobody stops it
    c = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    got = b""
    while got.count(b"data: ") < 4:
        chunk = c.recv(65536)
        assert chunk, got
        got += chunk
    assert got.startswith(b"HTTP/1.1 200")
    assert p.backend()["in_flight"] == 1
    assert sim_aborts(s) == 0
    c.close()
    left = time.monotonic()

    deadline = left + 5
    while sim_aborts(s) != 1:
        assert time.monotonic() < deadline, "the sim never saw the generation aborted"
        time.sleep(0.05)
    while p.backend()["in_flight"] != 0:
        assert time.monotonic() < deadline, p.status()
        time.sleep(0.05)
    m = metrics(s.url)
    assert m['vllm:num_requests_running{model_name="sim-model"}'] == 0
    # Cut long before the 20 s generation would have finished.
    assert m['vllm:generation_tokens_total{model_name="sim-model"}'] < 1 + 100
    # The proxy itself is fine: the next request is served.
    assert http("POST", p.url + CHAT_PATH, chat(2))[0] == 200


def large_body(size):
    head = b'{"model":"sim-model","max_tokens":1,"messages":[{"role":"user","content":"'
    tail = b'"}]}'
    return head + b"lorem ipsum " * ((size - len(head) - len(tail)) // 12) + tail


def test_a_large_request_body_reaches_the_backend_intact(proxy, sim):
    s = sim()
    p = ready_proxy(proxy, s)
    body = large_body(2 * 1024 * 1024)
    assert len(body) > 2 * 1024 * 1024 - 20
    code, _, resp = http("POST", p.url + CHAT_PATH, body, {"Content-Type": "application/json"})
    assert code == 200, resp
    last = sim_last_request(s.url)
    assert last["target"] == CHAT_PATH
    assert last["body_bytes"] == len(body)
    # The sim counted the prompt it parsed: every word arrived.
    assert json.loads(resp)["usage"]["prompt_tokens"] == body.count(b"lorem ipsum ") * 2


def test_a_large_request_body_held_during_a_wake_reaches_the_backend_intact(proxy):
    port = free_port()
    p = proxy(sim_config(port, "--startup-delay", "1s", wake="20s"))
    assert p.backend()["state"] == "asleep"
    body = large_body(2 * 1024 * 1024 + 7)
    code, headers, resp = http("POST", p.url + CHAT_PATH, body,
                               {"Content-Type": "application/json"})
    assert code == 200, resp
    assert "wake;dur=" in headers.get("server-timing", "")  # it was held, then sent
    assert sim_last_request(port)["body_bytes"] == len(body)
    assert json.loads(resp)["usage"]["prompt_tokens"] == body.count(b"lorem ipsum ") * 2


def test_a_chunked_request_body_reaches_the_backend_intact(proxy, sim):
    s = sim()
    p = ready_proxy(proxy, s)
    body = large_body(2 * 1024 * 1024 + 333)
    c = socket.create_connection(("127.0.0.1", p.port), timeout=30)
    try:
        c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                  b"Connection: close\r\n\r\n")
        for i in range(0, len(body), 100_000):
            piece = body[i: i + 100_000]
            c.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        c.sendall(b"0\r\n\r\n")
        resp = b""
        while chunk := c.recv(65536):
            resp += chunk
    finally:
        c.close()
    assert resp.startswith(b"HTTP/1.1 200 "), resp[:200]
    last = sim_last_request(s.url)
    assert last["body_bytes"] == len(body)
    # Framed upstream either way (the proxy may buffer or stream it), never both.
    framing = (last["headers"].get("content-length"), last["headers"].get("transfer-encoding"))
    assert framing in ((str(len(body)), None), (None, "chunked")), last["headers"]


def test_expect_100_continue_gets_continue_and_the_body_reaches_the_backend(proxy, sim, tmp_path):
    s = sim()
    p = ready_proxy(proxy, s)
    body = large_body(2 * 1024 * 1024)
    f = tmp_path / "body.json"
    f.write_bytes(body)
    t0 = time.monotonic()
    # curl waits up to --expect100-timeout for the 100 before sending the body anyway: a long
    # value makes a missing 100 Continue show up as a slow request.
    r = subprocess.run(
        ["curl", "-sS", "-v", "--http1.1", "--expect100-timeout", "20", "-o", "/dev/null",
         "-w", "%{http_code}", "-H", "Expect: 100-continue", "-H", "Content-Type: application/json",
         "--data-binary", f"@{f}", p.url + CHAT_PATH],
        capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert r.stdout == "200", r.stderr
    assert "< HTTP/1.1 100 Continue" in r.stderr, r.stderr
    assert took < 10, took
    last = sim_last_request(s.url)
    assert last["body_bytes"] == len(body)
    assert "expect" not in last["headers"]


def test_forwarded_headers_are_added_and_hop_by_hop_headers_are_dropped(proxy, sim):
    s = sim()
    p = ready_proxy(proxy, s)
    conn = httpclient.HTTPConnection("127.0.0.1", p.port, timeout=10)
    try:
        conn.request("POST", CHAT_PATH, body=json.dumps(chat(2)), headers={
            "Host": "api.example.test",
            "Content-Type": "application/json",
            "Connection": "keep-alive, X-Hop-Secret",
            "Keep-Alive": "timeout=5, max=100",
            "TE": "trailers",
            "Trailer": "X-Checksum",
            "Proxy-Authorization": "Basic c2VjcmV0OnNlY3JldA==",
            "Proxy-Connection": "keep-alive",
            "X-Hop-Secret": "only-for-the-proxy",
            "X-Forwarded-For": "10.1.2.3",
            "X-End-To-End": "kept",
            "Authorization": "Bearer for-vllm",
        })
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    finally:
        conn.close()
    h = sim_last_request(s.url)["headers"]
    assert h["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == "api.example.test"
    assert h["host"] == f"127.0.0.1:{s.port}"
    for hop in ("keep-alive", "te", "trailer", "proxy-authorization", "proxy-connection",
                "x-hop-secret"):
        assert hop not in h, (hop, h)
    assert h.get("connection", "keep-alive").lower() == "keep-alive", h
    assert h["x-end-to-end"] == "kept"
    assert h["authorization"] == "Bearer for-vllm"
    assert h["content-type"] == "application/json"


# Connection headers that nominate a few fields, and more than the proxy splits up front (eight):
# each nominated field is dropped, the others kept.
FEW = ["X-Hop-1"]
MANY = [f"X-Hop-{i}" for i in range(1, 12)]


def test_fields_a_connection_header_nominates_are_dropped_both_ways(proxy):
    heads = []

    def answer(conn, head, rest):
        heads.append(head.decode().lower())
        names = MANY if b"many" in head.split(b"\r\n")[0] else FEW
        fields = "".join(f"{n}: up\r\n" for n in names)
        conn.sendall((f"HTTP/1.1 200 OK\r\nConnection: keep-alive, {', '.join(names)}\r\n"
                      f"{fields}X-Up-Kept: yes\r\nContent-Length: 2\r\n\r\nok").encode())
        got = read_body(conn, head, rest)
        return None if got is None else got[1]

    up = RawUpstream(lambda conn: serve_requests(conn, answer))
    try:
        p = proxy(config_yaml(backend_yaml("b", up.port, ["m"], static=True)))
        p.wait_state("ready")
        for which, names in (("few", FEW), ("many", MANY)):
            conn = httpclient.HTTPConnection("127.0.0.1", p.port, timeout=10)
            try:
                headers = {n: "down" for n in names}
                headers.update({"Connection": "keep-alive, " + ", ".join(names),
                                "X-Down-Kept": "yes", "Content-Type": "application/json"})
                conn.request("POST", f"/v1/chat/completions?{which}", body=b'{"model":"m"}',
                             headers=headers)
                resp = conn.getresponse()
                assert resp.read() == b"ok"
                got = {k.lower() for k, _ in resp.getheaders()}
            finally:
                conn.close()
            assert resp.status == 200
            assert "x-up-kept" in got, got
            for n in names:
                assert n.lower() not in got, (which, n, got)
                assert f"\r\n{n.lower()}:" not in heads[-1], (which, n, heads[-1])
            assert "\r\nx-down-kept: yes" in heads[-1], heads[-1]
        # Two Connection headers: the names of both are dropped.
        conn = httpclient.HTTPConnection("127.0.0.1", p.port, timeout=10)
        try:
            conn.putrequest("POST", "/v1/chat/completions?two", skip_accept_encoding=True)
            for field, value in (("Connection", "keep-alive, X-Hop-1"), ("Connection", "X-Hop-2"),
                                 ("X-Hop-1", "down"), ("X-Hop-2", "down"), ("X-Down-Kept", "yes"),
                                 ("Content-Type", "application/json"), ("Content-Length", "13")):
                conn.putheader(field, value)
            conn.endheaders(b'{"model":"m"}')
            resp = conn.getresponse()
            assert resp.read() == b"ok" and resp.status == 200
        finally:
            conn.close()
        for n in ("x-hop-1", "x-hop-2"):
            assert f"\r\n{n}:" not in heads[-1], (n, heads[-1])
        assert "\r\nx-down-kept: yes" in heads[-1], heads[-1]
    finally:
        up.close()
