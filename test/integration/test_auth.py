"""Auth before wake: without a valid `Authorization: Bearer <key>` a routed request gets 401 and
never starts the backend; a valid key is served after one wake; keys never reach the logs or
--print-config."""

import concurrent.futures as cf
import json
import os
import secrets
import subprocess

import pytest

from proxy import sim_config
from support import BIN_DIR, CHAT, free_port, http, metrics, sim_last_request, sse_events


def new_key():
    return "sk-va-" + secrets.token_hex(12)


def config(port, auth, sim_args=(), extra_backend=""):
    return sim_config(port, "--startup-delay", "300ms", "--itl", "1ms", *sim_args,
                      extra=extra_backend, top="auth:\n" + auth)


def inline_keys(keys):
    return "  api_keys: " + json.dumps(keys)


def key_file(tmp_path, keys):
    path = tmp_path / "api-keys"
    path.write_text("# accepted keys\n\n" + "\n".join(f"  {k}  " for k in keys) + "\n")
    return f"  api_keys_file: {path}"


@pytest.fixture(params=["api_keys", "api_keys_file"])
def keyed_proxy(request, proxy, tmp_path):
    """A proxy whose two accepted keys come inline or from a file; returns (proxy, keys)."""
    keys = [new_key(), new_key()]
    auth = inline_keys(keys) if request.param == "api_keys" else key_file(tmp_path, keys)
    return proxy(config(free_port(), auth)), keys


def assert_openai_401(status, headers, body):
    assert status == 401, (status, body)
    assert headers["www-authenticate"] == "Bearer"
    err = json.loads(body)["error"]
    assert err["code"] == 401 and err["param"] is None
    assert err["type"] == "AuthenticationError" and err["message"]


def never_woken(p):
    b = p.assert_never_woken()
    assert p.events("backend state") == []
    assert (b["in_flight"], b["pending"]) == (0, 0)
    m = metrics(p.admin_url + "/metrics")
    for result in ("success", "failed", "timeout"):
        assert m[f'vllm_autoscaler_wakes_total{{backend="sim",result="{result}"}}'] == 0
    assert m['vllm_autoscaler_backend_state{backend="sim",state="asleep"}'] == 1
    return m


def test_requests_without_a_valid_key_get_401_and_never_start_the_backend(keyed_proxy):
    p, (key, other) = keyed_proxy
    bad_headers = [
        {},
        {"Authorization": "Bearer " + new_key()},
        {"Authorization": "Basic " + key},
        {"Authorization": key},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer " + key + "x"},
        {"Authorization": "Bearer " + key[:-1]},
        {"Authorization": "Bearer " + other.upper()},
        {"X-Api-Key": key},
    ]
    for headers in bad_headers:
        assert_openai_401(*http("POST", p.url + "/v1/chat/completions", CHAT, headers))
        assert_openai_401(*http("POST", p.url + "/v1/completions",
                                {"model": "sim-model", "prompt": "x"}, headers))
    # The proxy's own model list is part of the API too.
    assert_openai_401(*http("GET", p.url + "/v1/models"))
    # A scanner hammering the port, many at once.
    with cf.ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(
            lambda i: http("POST", p.url + "/v1/chat/completions", CHAT,
                           {"Authorization": f"Bearer guess-{i}"})[0], range(100)))
    assert codes == [401] * 100

    m = never_woken(p)
    assert m['vllm_autoscaler_rejected_requests_total{backend="none",reason="unauthorized"}'] == \
        2 * len(bad_headers) + 1 + 100
    # Health stays open and is not an API call.
    assert http("GET", p.url + "/health")[0] == 200
    never_woken(p)


def test_a_valid_key_is_served_after_one_wake_with_a_case_insensitive_scheme(keyed_proxy):
    p, (key, other) = keyed_proxy
    assert_openai_401(*http("POST", p.url + "/v1/chat/completions", CHAT))
    never_woken(p)

    status, headers, body = http("POST", p.url + "/v1/chat/completions", CHAT,
                                 {"Authorization": "bearer " + key})
    assert status == 200, body
    assert "wake;dur=" in headers["server-timing"]
    assert json.loads(body)["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
    for scheme in ("Bearer", "BEARER", "BeArEr"):
        assert http("POST", p.url + "/v1/chat/completions", CHAT,
                    {"Authorization": f"{scheme} {other}"})[0] == 200
    status, _, body = http("GET", p.url + "/v1/models", headers={"Authorization": "Bearer " + key})
    assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["sim-model"]
    # Still refused after the wake: a ready backend is no reason to let anyone in.
    assert_openai_401(*http("POST", p.url + "/v1/chat/completions", CHAT,
                            {"Authorization": "Bearer " + new_key()}))

    assert len(p.started_pids()) == 1
    p.settle()
    m = metrics(p.admin_url + "/metrics")
    assert m['vllm_autoscaler_wakes_total{backend="sim",result="success"}'] == 1
    assert m['vllm_autoscaler_requests_total{backend="sim",code="200"}'] == 4


def test_keys_never_appear_in_logs_or_print_config(proxy, tmp_path):
    inline, from_env, from_file = new_key(), new_key(), new_key()
    vllm_key = new_key()  # also the backend's own --api-key, sent by the health probe
    keys = [inline, from_env, from_file, vllm_key]
    auth = (inline_keys([inline, "${VA_TEST_API_KEY}", vllm_key]) + "\n"
            + key_file(tmp_path, [from_file]))
    health = f'    health: {{ headers: {{ Authorization: "Bearer {vllm_key}" }} }}\n'
    text = config(free_port(), auth, sim_args=("--api-key", vllm_key), extra_backend=health)
    env = {"VA_TEST_API_KEY": from_env}
    p = proxy(text, "--log-level", "debug", env=env)
    chat_url = p.url + "/v1/chat/completions"

    def bearer(k):
        return {"Authorization": "Bearer " + k}

    wrong = new_key()
    assert_openai_401(*http("POST", chat_url, CHAT, bearer(wrong)))
    assert http("POST", chat_url, CHAT, bearer(vllm_key))[0] == 200
    # The proxy lets the other keys through; the backend, guarded by its own key, answers them
    # with vLLM's 401 body (not the proxy's).
    for k in (inline, from_env, from_file):
        assert http("POST", chat_url, CHAT, bearer(k))[::2] == (401, b'{"error":"Unauthorized"}')
    events = sse_events(chat_url, {**CHAT, "stream": True}, bearer(vllm_key))
    assert events[-1][1] == "[DONE]"
    assert http("GET", p.url + "/v1/models", headers=bearer(from_file))[0] == 200
    assert p.backend()["state"] == "ready" and p.backend()["last_error"] is None
    assert p.stop() == 0

    log = p.output()
    assert '"msg":"request"' in log and "backend process started" in log
    assert '"msg":"stopped"' in log
    for k in keys + [wrong]:
        assert k not in log, f"key {k} leaked into the log:\n" + "\n".join(
            line for line in log.splitlines() if k in line)

    config_path = next(a for a in p.args if a.endswith("config.yaml"))
    printed = subprocess.run([BIN_DIR / "vllm-autoscaler", "--config", config_path,
                              "--print-config", "--api-key-file", tmp_path / "api-keys"],
                             capture_output=True, text=True, timeout=10, env={**os.environ, **env})
    assert printed.returncode == 0, printed.stderr
    assert "***" in printed.stdout and "api_keys_file" in printed.stdout
    for k in keys:
        assert k not in printed.stdout + printed.stderr


def test_upstream_headers_send_vllms_own_key_and_never_the_clients(proxy):
    """Clients hold the proxy's keys only; backends[].upstream_headers replaces their
    Authorization with vLLM's own key (from the environment) on the way up. vLLM's --api-key
    guards /v1 only, so the health probe needs no key. The key is masked in --print-config."""
    client_key, vllm_key = new_key(), new_key()
    upstream = '    upstream_headers: { authorization: "Bearer ${VA_TEST_VLLM_KEY}" }\n'
    sim_port = free_port()
    text = config(sim_port, inline_keys([client_key]), sim_args=("--api-key", vllm_key),
                  extra_backend=upstream)
    env = {"VA_TEST_VLLM_KEY": vllm_key}
    p = proxy(text, env=env)
    chat_url = p.url + "/v1/chat/completions"

    status, _, body = http("POST", chat_url, CHAT, {"Authorization": "Bearer " + client_key})
    assert status == 200, body
    seen = sim_last_request(sim_port)["headers"]
    # One Authorization only (the sim joins repeated fields with ", "), and it is vLLM's.
    assert seen["authorization"] == "Bearer " + vllm_key
    events = sse_events(chat_url, {**CHAT, "stream": True},
                        {"Authorization": "Bearer " + client_key})
    assert events[-1][1] == "[DONE]"
    assert sim_last_request(sim_port)["headers"]["authorization"] == "Bearer " + vllm_key
    # A client that sends vLLM's key itself is refused by the proxy: it is not one of its keys.
    assert_openai_401(*http("POST", chat_url, CHAT, {"Authorization": "Bearer " + vllm_key}))
    assert p.stop() == 0
    assert vllm_key not in p.output() and client_key not in p.output()

    config_path = next(a for a in p.args if a.endswith("config.yaml"))
    printed = subprocess.run([BIN_DIR / "vllm-autoscaler", "--print-config", config_path],
                             capture_output=True, text=True, timeout=10, env={**os.environ, **env})
    assert printed.returncode == 0, printed.stderr
    assert "upstream_headers:\n      authorization: \"***\"\n" in printed.stdout, printed.stdout
    assert vllm_key not in printed.stdout + printed.stderr


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding", "Connection",
                                  "X-Forwarded-For"])
def test_upstream_headers_may_not_set_what_the_proxy_writes_itself(name):
    text = (f"backends:\n  - upstream: http://127.0.0.1:1\n"
            f"    upstream_headers: {{ {name}: x }}\n")
    checked = subprocess.run([BIN_DIR / "vllm-autoscaler", "--check-config", "/dev/stdin"],
                             input=text, capture_output=True, text=True, timeout=10)
    assert checked.returncode == 2
    assert f"backends[0].upstream_headers.{name}: is written by the proxy itself" in checked.stderr
