"""curl, the real binary, through the proxy: a cold start answered 200 with Server-Timing, and an
SSE stream read with `curl -N` that ends in [DONE]."""

import json
import shutil
import subprocess
import time

from proxy import sim_config, start_proxy
from support import chat as chat_body, free_port

MODEL = "sim-model"


def config(port, delay="1s"):
    return sim_config(port, "--startup-delay", delay, "--itl", "20ms", model=MODEL)


def curl(*args, timeout=60):
    exe = shutil.which("curl")
    assert exe, "curl is not installed (scripts/setup installs it)"
    return subprocess.run([exe, "--silent", "--show-error", "--max-time", "50", *args],
                          capture_output=True, timeout=timeout)


def chat(max_tokens, stream=False):
    return json.dumps({**chat_body(max_tokens, MODEL), "stream": stream})


def test_curl_cold_start_is_200_with_server_timing(procs, tmp_path):
    p = start_proxy(config(free_port()))
    procs.append(p)
    assert p.backend()["state"] == "asleep"
    headers = tmp_path / "headers.txt"
    t0 = time.monotonic()
    done = curl("-o", tmp_path / "body.json", "-D", headers, "-w", "%{http_code}",
                "-H", "Content-Type: application/json", "-d", chat(3),
                p.url + "/v1/chat/completions")
    waited = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"200"
    assert waited >= 0.9  # held through the 1s startup delay
    head = headers.read_text().lower().splitlines()
    timing = [h for h in head if h.startswith("server-timing:")]
    assert len(timing) == 1 and "wake;dur=" in timing[0], head
    assert int(timing[0].split("dur=")[1].strip()) >= 900
    doc = json.loads((tmp_path / "body.json").read_text())
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
    assert len(p.started_pids()) == 1


def test_curl_no_buffer_stream_arrives_event_by_event_and_ends_with_done(procs):
    p = start_proxy(config(free_port()))
    procs.append(p)
    exe = shutil.which("curl")
    assert exe
    max_tokens = 8
    proc = subprocess.Popen([exe, "-sS", "-N", "--max-time", "50", "-H",
                             "Content-Type: application/json", "-d", chat(max_tokens, stream=True),
                             p.url + "/v1/chat/completions"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    arrivals = []
    lines = []
    try:
        for raw in proc.stdout:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
                lines.append(line[6:])
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(d) for d in lines[:-1]]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert contents == [""] + [f"tok{i} " for i in range(max_tokens)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # Relayed as generated (20ms apart), not buffered into one write at the end.
    token_times = arrivals[1:1 + max_tokens]
    assert token_times[-1] - token_times[0] >= 0.07
