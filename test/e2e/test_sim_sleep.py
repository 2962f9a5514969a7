"""vllm-sim's sleep mode behaves like vLLM's: the routes under VLLM_SERVER_DEV_MODE=1 with
--enable-sleep-mode, inference failing while asleep, level 2's wake order, in-flight requests
aborted or waited for, vllm:engine_sleep_state, and a simulated GPU shared by sims."""

import concurrent.futures
import http.client as httpclient
import json
import signal
import time

from support import eventually, http, metrics, sse_events

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
DEV = {"VLLM_SERVER_DEV_MODE": "1"}


def chat_body(max_tokens=4, **extra):
    return {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens, **extra}


def is_sleeping(url):
    status, _, body = http("GET", url + "/is_sleeping")
    assert status == 200
    return json.loads(body)["is_sleeping"]


def asleep_total(url):
    return metrics(url)["vllm_sim_requests_while_asleep_total"]


def sleep_state(url):
    """The sleep_state label whose vllm:engine_sleep_state gauge is 1 (and checks the others are 0)."""
    m = metrics(url)
    states = {s: m[f'vllm:engine_sleep_state{{engine="0",model_name="sim-model",sleep_state="{s}"}}']
              for s in ("awake", "weights_offloaded", "discard_all")}
    on = [s for s, v in states.items() if v == 1.0]
    assert len(on) == 1 and sum(states.values()) == 1.0, states
    return on[0]


def finished(url, reason):
    return metrics(url)[f'vllm:request_success_total{{finished_reason="{reason}",model_name="sim-model"}}']


def running(url):
    return metrics(url)['vllm:num_requests_running{model_name="sim-model"}']


def stream_in_background(pool, url, max_tokens):
    """Starts a streamed chat; the future gives its events, or "cut" when the connection broke."""
    def run():
        try:
            return sse_events(url + CHAT, chat_body(max_tokens=max_tokens, stream=True))
        except (httpclient.HTTPException, OSError):
            return "cut"
    return pool.submit(run)


def sleeping_sim(sim, *args, **kwargs):
    return sim("--enable-sleep-mode", *args, env=DEV, **kwargs)


# --- the routes ------------------------------------------------------------------------------


def test_sleep_routes_answer_404_without_dev_mode(sim):
    p = sim("--enable-sleep-mode", env={"VLLM_SERVER_DEV_MODE": "0"})
    for method, path in (("POST", "/sleep"), ("POST", "/wake_up"), ("GET", "/is_sleeping"),
                         ("POST", "/collective_rpc")):
        assert http(method, p.url + path)[0] == 404, path
    assert http("POST", p.url + CHAT, chat_body())[0] == 200


def test_sleep_without_enable_sleep_mode_answers_400_and_stays_awake(sim):
    p = sim(env=DEV)
    status, _, body = http("POST", p.url + "/sleep")
    assert status == 400
    assert "Sleep mode is not enabled" in json.loads(body)["error"]["message"]
    assert http("POST", p.url + "/wake_up")[0] == 400
    assert is_sleeping(p.url) is False
    assert http("POST", p.url + CHAT, chat_body())[0] == 200
    assert "vllm:engine_sleep_state" not in http("GET", p.url + "/metrics")[2].decode()


def test_bad_level_or_tag_answers_400(sim):
    p = sleeping_sim(sim)
    assert http("POST", p.url + "/sleep?level=3")[0] == 400
    assert http("POST", p.url + "/sleep?mode=keep")[0] == 400
    assert http("POST", p.url + "/wake_up?tags=everything")[0] == 400
    assert is_sleeping(p.url) is False


# --- level 1 ---------------------------------------------------------------------------------


def test_level1_sleep_fails_inference_and_counts_it_until_woken(sim):
    p = sleeping_sim(sim)
    assert sleep_state(p.url) == "awake"
    assert http("POST", p.url + "/sleep")[0] == 200
    assert is_sleeping(p.url) is True
    assert sleep_state(p.url) == "weights_offloaded"
    status, _, body = http("POST", p.url + CHAT, chat_body())
    assert status == 500
    assert "sleeping" in json.loads(body)["error"]["message"]
    assert http("POST", p.url + COMPLETIONS, {"model": "sim-model", "prompt": "x"})[0] == 500
    assert asleep_total(p.url) == 2
    assert http("GET", p.url + "/health")[0] == 200
    assert http("GET", p.url + "/v1/models")[0] == 200
    assert http("POST", p.url + "/wake_up")[0] == 200
    assert is_sleeping(p.url) is False
    assert sleep_state(p.url) == "awake"
    assert http("POST", p.url + CHAT, chat_body())[0] == 200
    assert asleep_total(p.url) == 2
    assert "seconds to fall asleep" in p.output() and "seconds to wake up" in p.output()


def test_sleep_answers_200_with_an_empty_body(sim):
    p = sleeping_sim(sim)
    status, _, body = http("POST", p.url + "/sleep?level=1")
    assert (status, body) == (200, b"")


def test_sleep_and_wake_take_their_delays(sim):
    p = sleeping_sim(sim, "--sleep-delay", "300ms", "--wake-delay", "200ms", "--wake-delay-l2", "600ms")
    t0 = time.monotonic()
    assert http("POST", p.url + "/sleep")[0] == 200
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    assert http("POST", p.url + "/wake_up")[0] == 200
    assert 0.2 <= time.monotonic() - t0 < 0.6
    assert http("POST", p.url + "/sleep?level=2")[0] == 200
    t0 = time.monotonic()
    assert http("POST", p.url + "/wake_up")[0] == 200
    assert time.monotonic() - t0 >= 0.6


# --- level 2 ---------------------------------------------------------------------------------


def test_level2_wakes_in_vllm_order_and_serves(sim):
    p = sleeping_sim(sim)
    assert http("POST", p.url + "/sleep?level=2")[0] == 200
    assert sleep_state(p.url) == "discard_all"
    assert http("POST", p.url + "/wake_up?tags=weights")[0] == 200
    assert is_sleeping(p.url) is True
    assert http("POST", p.url + CHAT, chat_body())[0] == 500
    status, _, body = http("POST", p.url + "/collective_rpc", {"method": "reload_weights"})
    assert (status, json.loads(body)) == (200, {"results": [None]})
    assert http("POST", p.url + "/wake_up?tags=kv_cache")[0] == 200
    assert is_sleeping(p.url) is False
    assert sleep_state(p.url) == "awake"
    assert http("POST", p.url + CHAT, chat_body())[0] == 200
    assert asleep_total(p.url) == 1


def test_level2_wake_without_reload_weights_fails_inference(sim):
    p = sleeping_sim(sim)
    assert http("POST", p.url + "/sleep?level=2")[0] == 200
    assert http("POST", p.url + "/wake_up?tags=weights&tags=kv_cache")[0] == 200
    assert is_sleeping(p.url) is False
    status, _, body = http("POST", p.url + CHAT, chat_body())
    assert status == 500
    assert "reload_weights" in json.loads(body)["error"]["message"]
    assert asleep_total(p.url) == 1
    assert http("POST", p.url + "/collective_rpc", {"method": "reload_weights"})[0] == 200
    assert http("POST", p.url + CHAT, chat_body())[0] == 200


def test_reload_weights_before_the_weights_are_back_fails(sim):
    p = sleeping_sim(sim)
    assert http("POST", p.url + "/sleep?level=2")[0] == 200
    assert http("POST", p.url + "/collective_rpc", {"method": "reload_weights"})[0] == 500


# --- requests in flight ----------------------------------------------------------------------


def test_sleep_mode_abort_cuts_an_inflight_stream(sim):
    p = sleeping_sim(sim, "--itl", "50ms")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stream = stream_in_background(pool, p.url, max_tokens=200)
        eventually(lambda: running(p.url) == 1)
        assert http("POST", p.url + "/sleep")[0] == 200
        result = stream.result(timeout=10)
    assert result == "cut" or result[-1][1] != "[DONE]"
    assert finished(p.url, "abort") == 1
    assert finished(p.url, "length") == 0
    assert is_sleeping(p.url) is True
    assert running(p.url) == 0


def test_sleep_mode_wait_waits_for_the_inflight_stream(sim):
    p = sleeping_sim(sim, "--itl", "20ms")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stream = stream_in_background(pool, p.url, max_tokens=25)
        eventually(lambda: running(p.url) == 1)
        assert http("POST", p.url + "/sleep?mode=wait")[0] == 200
        slept_at = time.monotonic()
        events = stream.result(timeout=10)
    assert events != "cut" and events[-1][1] == "[DONE]"
    assert events[-1][0] <= slept_at
    assert finished(p.url, "length") == 1
    assert finished(p.url, "abort") == 0
    assert is_sleeping(p.url) is True


# --- the simulated GPU -----------------------------------------------------------------------


def gpu_sim(sim, tmp_path, **kwargs):
    return sleeping_sim(sim, "--gpu", "gpu0", "--gpu-dir", tmp_path, "--gpu-memory-gib", "24",
                        "--model-memory-gib", "16", **kwargs)


def test_second_sim_cannot_wake_while_the_first_is_awake(sim, tmp_path):
    a = gpu_sim(sim, tmp_path)
    assert http("POST", a.url + "/sleep")[0] == 200
    b = gpu_sim(sim, tmp_path)
    assert http("POST", b.url + "/sleep?level=2")[0] == 200
    assert http("POST", a.url + "/wake_up")[0] == 200
    status, _, body = http("POST", b.url + "/wake_up")
    assert status == 500
    assert "CUDA out of memory" in body.decode()
    assert is_sleeping(b.url) is True
    assert sleep_state(b.url) == "discard_all"
    assert "CUDA out of memory" in b.output()
    assert http("POST", a.url + "/sleep")[0] == 200
    assert http("POST", b.url + "/wake_up")[0] == 200
    assert is_sleeping(b.url) is False


def test_start_fails_with_cuda_out_of_memory_when_the_gpu_is_full(sim, tmp_path):
    gpu_sim(sim, tmp_path)
    b = gpu_sim(sim, tmp_path, wait=False)
    assert b.wait(timeout=10) != 0
    assert "CUDA out of memory" in b.output()
    assert "Application startup complete." not in b.output()


def test_a_killed_sims_claim_does_not_block(sim, tmp_path):
    a = gpu_sim(sim, tmp_path)
    a.stop(signal.SIGKILL)
    b = gpu_sim(sim, tmp_path)
    assert http("POST", b.url + CHAT, chat_body())[0] == 200


def test_a_stopped_sim_releases_its_claim(sim, tmp_path):
    a = gpu_sim(sim, tmp_path)
    assert a.stop(signal.SIGTERM) == 0
    assert (tmp_path / "gpu0").read_text() == ""
    gpu_sim(sim, tmp_path)
