"""Cold start: requests to a sleeping backend are held, the backend is woken once, all answered."""

import concurrent.futures as cf
import json
import random
import time

from proxy import sim_config
from support import CHAT, free_port, http, metrics


def config(port, delay="2s"):
    return sim_config(port, "--startup-delay", delay, "--itl", "1ms")


def test_concurrent_requests_are_held_and_all_answered_with_one_start(proxy):
    port = free_port()
    p = proxy(config(port))
    assert p.backend()["state"] == "asleep"
    with cf.ThreadPoolExecutor(200) as pool:
        futures = [pool.submit(http, "POST", p.url + "/v1/chat/completions", CHAT, None, 60)
                   for _ in range(200)]
        results = [f.result() for f in futures]
    codes = [r[0] for r in results]
    assert codes == [200] * 200, codes
    assert len(p.started_pids()) == 1
    assert all("wake;dur=" in r[1].get("server-timing", "") for r in results)
    m = metrics(p.admin_url + "/metrics")
    assert m['vllm_autoscaler_wakes_total{backend="sim",result="success"}'] == 1
    assert m['vllm_autoscaler_requests_total{backend="sim",code="200"}'] == 200
    assert p.backend()["state"] == "ready"


def test_requests_spread_over_the_wake_are_all_answered_with_one_start(proxy):
    port = free_port()
    p = proxy(config(port, delay="2s"))
    rng = random.Random(7)

    def late_request(delay):
        time.sleep(delay)
        return http("POST", p.url + "/v1/chat/completions", CHAT, None, 60)[0]

    with cf.ThreadPoolExecutor(200) as pool:
        codes = list(pool.map(late_request, [rng.uniform(0, 2.5) for _ in range(200)]))
    assert codes == [200] * 200
    assert len(p.started_pids()) == 1


def test_a_held_request_gets_an_openai_answer_after_the_wake(proxy):
    port = free_port()
    p = proxy(config(port, delay="1s"))
    t0 = time.monotonic()
    code, headers, body = http("POST", p.url + "/v1/chat/completions", CHAT)
    waited = time.monotonic() - t0
    assert code == 200
    assert waited >= 0.9
    doc = json.loads(body)
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"]["role"] == "assistant"
