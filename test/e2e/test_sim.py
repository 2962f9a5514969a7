"""vllm-sim, the GPU-free vLLM stand-in, behaves like vLLM where a proxy can tell."""

import http.client as httpclient
import json
import signal
import socket
import time

import pytest

from support import BIN_DIR, Proc, http, metrics, refused, sse_events

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def chat_body(max_tokens=4, **extra):
    return {
        "model": "sim-model",
        "messages": [{"role": "user", "content": "say something nice"}],
        "max_tokens": max_tokens,
        **extra,
    }


def eventually(check, timeout=2.0, interval=0.02):
    """Polls `check()` until it returns a truthy value; returns it, or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


def success_total(url, reason):
    return metrics(url)[f'vllm:request_success_total{{finished_reason="{reason}",model_name="sim-model"}}']


def running(url):
    return metrics(url)['vllm:num_requests_running{model_name="sim-model"}']


# --- startup and shutdown -------------------------------------------------------------------


def test_refuses_connections_until_startup_delay_has_passed(sim):
    p = sim("--startup-delay", "1s", wait=False)
    time.sleep(max(0.0, p.started_at + 0.3 - time.monotonic()))
    assert refused(p.port)
    p.wait_for_output("Application startup complete.", timeout=3)
    assert time.monotonic() - p.started_at < 3
    assert f"Starting vLLM API server on http://127.0.0.1:{p.port}" in p.output()
    status, _, body = http("GET", f"{p.url}/health")
    assert (status, body) == (200, b"")


def test_port_zero_lets_the_kernel_pick_and_logs_it(sim):
    p = sim(port=0)
    assert p.port != 0
    assert http("GET", f"{p.url}/health")[0] == 200


def test_sigterm_exits_zero_promptly_even_mid_stream(sim):
    p = sim("--itl", "1s")
    s = socket.create_connection(("127.0.0.1", p.port))
    body = json.dumps(chat_body(max_tokens=100, stream=True)).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    s.recv(4096)
    t0 = time.monotonic()
    assert p.stop(signal.SIGTERM, timeout=5) == 0
    assert time.monotonic() - t0 < 1.0
    s.close()


def test_sigterm_during_startup_delay_exits_zero(sim):
    p = sim("--startup-delay", "30s", wait=False)
    p.wait_for_output("loading model")
    assert p.stop(signal.SIGTERM, timeout=5) == 0


def test_fail_at_start_exits_with_status_and_message_without_listening(sim):
    p = sim("--startup-delay", "200ms", "--fail-at-start", "3", "--fail-message", "CUDA out of memory",
            wait=False)
    assert p.wait(timeout=5) == 3
    assert "CUDA out of memory" in p.output()
    assert "Application startup complete." not in p.output()
    assert refused(p.port)


def test_exit_after_n_requests_exits_with_status_1(sim):
    p = sim("--exit-after", "2", "--itl", "1ms")
    assert http("POST", p.url + CHAT, chat_body())[0] == 200
    assert p.alive()
    events = sse_events(p.url + CHAT, chat_body(stream=True))
    assert events[-1][1] == "[DONE]"
    assert p.wait(timeout=5) == 1
    assert "simulated crash after 2 requests" in p.output()


def test_die_mid_stream_after_n_tokens_cuts_the_stream(sim):
    p = sim("--die-mid-stream-after", "3", "--itl", "1ms")
    events = sse_events(p.url + CHAT, chat_body(max_tokens=10, stream=True))
    contents = [json.loads(d)["choices"][0]["delta"].get("content") for _, d in events if d != "[DONE]"]
    assert contents == ["", "tok0 ", "tok1 ", "tok2 "]
    assert p.wait(timeout=5) == 1


def test_bad_flag_value_exits_2(procs):
    p = Proc([BIN_DIR / "vllm-sim", "--itl", "fast"])
    procs.append(p)
    assert p.wait(timeout=5) == 2
    assert "not a duration" in p.output()


# --- plain endpoints ------------------------------------------------------------------------


def test_health_ping_and_version(sim):
    p = sim()
    status, headers, body = http("GET", f"{p.url}/health")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == "0"
    assert http("GET", f"{p.url}/ping")[:3:2] == (200, b"")
    status, _, body = http("GET", f"{p.url}/version")
    assert status == 200 and json.loads(body) == {"version": "0.0.0-sim"}


def test_models_lists_the_served_model_in_vllm_shape(sim):
    p = sim(model="my-llama")
    status, headers, body = http("GET", f"{p.url}/v1/models")
    assert status == 200 and headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["object"] == "list"
    [m] = doc["data"]
    assert m["id"] == m["root"] == "my-llama"
    assert m["object"] == "model" and m["owned_by"] == "vllm"
    assert isinstance(m["created"], int) and m["max_model_len"] == 4096 and m["parent"] is None


def test_unknown_path_and_wrong_method_look_like_fastapi(sim):
    p = sim()
    status, _, body = http("GET", f"{p.url}/nope")
    assert (status, json.loads(body)) == (404, {"detail": "Not Found"})
    status, headers, body = http("DELETE", p.url + CHAT)
    assert (status, json.loads(body)) == (405, {"detail": "Method Not Allowed"})
    assert headers["allow"] == "POST"


def test_last_request_records_what_arrived_except_probes(sim):
    p = sim()
    http("POST", p.url + CHAT + "?x=1", chat_body(), headers={"X-Custom": "v1"})
    http("GET", f"{p.url}/health")
    http("GET", f"{p.url}/metrics")
    status, _, body = http("GET", f"{p.url}/sim/last-request")
    last = json.loads(body)
    assert status == 200
    assert last["method"] == "POST" and last["target"] == CHAT + "?x=1"
    assert last["headers"]["x-custom"] == "v1"
    assert last["headers"]["content-type"] == "application/json"
    assert last["body_bytes"] == len(json.dumps(chat_body()))


def test_metrics_count_connections_and_requests(sim):
    p = sim()
    conn = httpclient.HTTPConnection("127.0.0.1", p.port, timeout=5)
    for _ in range(3):  # one keep-alive connection, three requests
        conn.request("GET", "/health")
        assert conn.getresponse().read() == b""
    conn.close()
    m = metrics(p.url)
    assert m["vllm_sim_connections_total"] == 2  # the keep-alive one + this scrape
    assert m["vllm_sim_requests_total"] == 4
    m = metrics(p.url)
    assert (m["vllm_sim_connections_total"], m["vllm_sim_requests_total"]) == (3, 5)
    assert m['vllm:num_requests_waiting{model_name="sim-model"}'] == 0
    for reason in ("stop", "length", "abort"):
        assert success_total(p.url, reason) == 0


def test_expect_100_continue(sim):
    p = sim("--itl", "1ms")
    body = json.dumps(chat_body(max_tokens=2)).encode()
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert s.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n")
        s.sendall(body)
        assert s.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")


# --- errors and auth ------------------------------------------------------------------------


def test_api_key_guards_v1_with_vllm_401_body(sim):
    p = sim("--api-key", "k1", "--api-key", "k2", "--itl", "1ms")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic k1"}):
        status, h, body = http("GET", f"{p.url}/v1/models", headers=headers)
        assert (status, body) == (401, b'{"error":"Unauthorized"}')
        assert h["content-type"] == "application/json"
    assert http("POST", p.url + CHAT, chat_body())[0] == 401
    assert http("GET", f"{p.url}/v1/models", headers={"Authorization": "Bearer k1"})[0] == 200
    assert http("POST", p.url + CHAT, chat_body(), headers={"Authorization": "bearer k2"})[0] == 200
    assert http("GET", f"{p.url}/health")[0] == 200
    assert http("GET", f"{p.url}/metrics")[0] == 200


def test_unknown_model_is_404_in_vllm_error_shape(sim):
    p = sim()
    status, h, body = http("POST", p.url + CHAT, {**chat_body(), "model": "gpt-9"})
    assert status == 404 and h["content-type"] == "application/json"
    assert json.loads(body) == {"error": {"message": "The model `gpt-9` does not exist.",
                                          "type": "NotFoundError", "param": "model", "code": 404}}


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1,2]"])
def test_invalid_json_is_400_in_vllm_error_shape(sim, body):
    p = sim()
    status, _, raw = http("POST", p.url + COMPLETIONS, body, headers={"Content-Type": "application/json"})
    err = json.loads(raw)["error"]
    assert status == 400
    assert err["type"] == "BadRequestError" and err["code"] == 400 and err["param"] is None
    assert err["message"]


# --- non-streaming completions --------------------------------------------------------------


def test_chat_completion_json_shape_and_usage(sim):
    p = sim("--itl", "1ms")
    status, h, raw = http("POST", p.url + CHAT, chat_body(max_tokens=5))
    assert status == 200 and h["content-type"] == "application/json"
    doc = json.loads(raw)
    assert doc["id"].startswith("chatcmpl-") and doc["object"] == "chat.completion"
    assert doc["model"] == "sim-model" and isinstance(doc["created"], int)
    [choice] = doc["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length"
    assert choice["stop_reason"] is None and choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 "
    u = doc["usage"]
    assert u["completion_tokens"] == 5 and u["prompt_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + 5
    assert success_total(p.url, "length") == 1


def test_completion_json_shape_and_default_max_tokens(sim):
    p = sim("--itl", "1ms", "--max-tokens", "3")
    status, _, raw = http("POST", p.url + COMPLETIONS, {"model": "sim-model", "prompt": "once upon"})
    doc = json.loads(raw)
    assert status == 200
    assert doc["id"].startswith("cmpl-") and doc["object"] == "text_completion"
    [choice] = doc["choices"]
    assert choice["text"] == "tok0 tok1 tok2 " and choice["finish_reason"] == "length"
    assert doc["usage"] == {"prompt_tokens": 2, "total_tokens": 5, "completion_tokens": 3}


def test_max_completion_tokens_overrides(sim):
    p = sim("--itl", "1ms")
    body = {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 2}
    doc = json.loads(http("POST", p.url + CHAT, body)[2])
    assert doc["usage"]["completion_tokens"] == 2


# --- streaming ------------------------------------------------------------------------------


def test_chat_stream_sends_each_token_when_generated(sim):
    p = sim("--itl", "50ms")
    events = sse_events(p.url + CHAT, chat_body(max_tokens=10, stream=True,
                                                stream_options={"include_usage": True}))
    payloads = [d for _, d in events]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(d) for d in payloads[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = chunks[1:11]
    assert [c["choices"][0]["delta"]["content"] for c in content] == [f"tok{i} " for i in range(10)]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["finish_reason"] for c in content] == [None] * 9 + ["length"]
    usage = chunks[11]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 10
    assert len(chunks) == 12
    times = [t for t, _ in events[1:11]]
    assert times[-1] - times[0] >= 0.3
    assert all(b > a for a, b in zip(times, times[1:]))


def test_stream_framing_is_exact_sse_over_chunked(sim):
    p = sim("--itl", "1ms")
    status, h, raw = http("POST", p.url + CHAT, chat_body(max_tokens=3, stream=True))
    assert status == 200
    assert h["content-type"] == "text/event-stream; charset=utf-8"
    assert h["transfer-encoding"] == "chunked" and "content-length" not in h
    text = raw.decode()
    assert text.endswith("data: [DONE]\n\n")
    events = text.split("\n\n")[:-1]
    assert len(events) == 5  # role, 3 tokens, [DONE]; no usage without stream_options
    assert all(e.startswith("data: ") and "\n" not in e for e in events)


def test_stream_options_present_defaults_include_usage_true_and_false_disables(sim):
    p = sim("--itl", "1ms")
    on = sse_events(p.url + CHAT, chat_body(max_tokens=2, stream=True, stream_options={}))
    assert json.loads(on[-2][1])["usage"]["completion_tokens"] == 2
    off = sse_events(p.url + CHAT, chat_body(max_tokens=2, stream=True,
                                             stream_options={"include_usage": False}))
    assert "usage" not in json.loads(off[-2][1])
    status, _, _ = http("POST", p.url + CHAT, chat_body(stream_options={"include_usage": True}))
    assert status == 400  # stream_options without stream


def test_completion_stream_shape(sim):
    p = sim("--itl", "1ms", "--event-timestamps")
    events = sse_events(p.url + COMPLETIONS, {"prompt": "hi", "max_tokens": 3, "stream": True})
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert [c["choices"][0]["text"] for c in chunks] == ["tok0 ", "tok1 ", "tok2 "]
    assert all(c["object"] == "text_completion" and c["id"].startswith("cmpl-") for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    stamps = [c["sim_sent_ns"] for c in chunks]
    assert stamps == sorted(stamps) and abs(stamps[0] / 1e9 - time.time()) < 60


def test_stream_keeps_the_connection_alive(sim):
    p = sim("--itl", "1ms")
    conn = httpclient.HTTPConnection("127.0.0.1", p.port, timeout=5)
    for _ in range(2):
        conn.request("POST", CHAT, json.dumps(chat_body(max_tokens=2, stream=True)),
                     {"Content-Type": "application/json"})
        assert conn.getresponse().read().endswith(b"data: [DONE]\n\n")
    conn.close()
    assert metrics(p.url)["vllm_sim_connections_total"] == 2  # the keep-alive one + this scrape


# --- client disconnect ----------------------------------------------------------------------


def test_client_disconnect_mid_stream_aborts_the_request(sim):
    p = sim("--itl", "20ms")
    body = json.dumps(chat_body(max_tokens=1000, stream=True)).encode()
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    seen = b""
    while seen.count(b"data: ") < 3:
        seen += s.recv(4096)
    assert running(p.url) == 1
    s.close()
    eventually(lambda: success_total(p.url, "abort") == 1)
    assert running(p.url) == 0
    assert success_total(p.url, "length") == 0
    p.wait_for_output(" aborted.", timeout=2)


def test_client_disconnect_while_waiting_for_a_json_reply_aborts(sim):
    p = sim("--ttft", "10s")
    body = json.dumps(chat_body()).encode()
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    eventually(lambda: running(p.url) == 1)
    s.close()
    eventually(lambda: success_total(p.url, "abort") == 1)
    assert running(p.url) == 0


def test_the_prefix_cache_hits_on_leading_full_blocks_and_prefill_costs_only_the_rest(sim):
    p = sim("--block-size", "4", "--prefill-per-token", "20ms", "--itl", "1ms")
    words = [f"w{i}" for i in range(40)]

    def ask(prompt_words):
        began = time.monotonic()
        status, _, _ = http("POST", p.url + COMPLETIONS,
                            {"model": "sim-model", "prompt": " ".join(prompt_words), "max_tokens": 1})
        assert status == 200
        return time.monotonic() - began

    def counts():
        m = metrics(p.url)
        return (m['vllm:prefix_cache_queries_total{model_name="sim-model"}'],
                m['vllm:prefix_cache_hits_total{model_name="sim-model"}'])

    cold = ask(words)  # 40 tokens to prefill: 0.8 s
    assert counts() == (40, 0)
    warm = ask(words)  # all 10 blocks cached
    assert counts() == (80, 40)
    # The first 22 words shared, then others: 5 full blocks hit (20 tokens), 22 to prefill.
    half = ask(words[:22] + [f"x{i}" for i in range(20)])
    assert counts() == (122, 60)
    assert cold >= 0.8 and warm < 0.3 and 0.4 <= half < 0.8, (cold, warm, half)


def test_a_full_prefix_cache_evicts_a_prompts_last_blocks_first_as_vllm_does(sim):
    # 4 blocks of 2 tokens. A shared prefix of 2 blocks and a tail of 1; then an unrelated prompt
    # of 2 blocks overflows the cache by one: the tail goes, never the prefix others share.
    p = sim("--block-size", "2", "--prefix-cache-blocks", "4", "--itl", "1ms")

    def hits_of(prompt):
        before = metrics(p.url)['vllm:prefix_cache_hits_total{model_name="sim-model"}']
        status, _, _ = http("POST", p.url + COMPLETIONS,
                            {"model": "sim-model", "prompt": prompt, "max_tokens": 1})
        assert status == 200
        return metrics(p.url)['vllm:prefix_cache_hits_total{model_name="sim-model"}'] - before

    assert hits_of("s1 s2 s3 s4 t1 t2") == 0
    assert hits_of("u1 u2 u3 u4") == 0
    assert hits_of("s1 s2 s3 s4 v1 v2") == 4  # the shared 2 blocks are still there


def test_a_prefix_cache_of_zero_blocks_never_hits(sim):
    p = sim("--prefix-cache-blocks", "0")
    for _ in range(2):
        assert http("POST", p.url + CHAT, chat_body(max_tokens=1))[0] == 200
    m = metrics(p.url)
    assert m['vllm:prefix_cache_hits_total{model_name="sim-model"}'] == 0
    assert m['vllm:prefix_cache_queries_total{model_name="sim-model"}'] == 6  # 3 words, twice
