"""The official `openai` npm client (pinned in node/package-lock.json) against a sleeping backend:
the first call is held through the wake, streaming arrives chunk by chunk, models are listed."""

import json
import pathlib
import shutil
import subprocess

from proxy import sim_config, start_proxy
from support import free_port, metrics

NODE_DIR = pathlib.Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "openai_client.mjs"
MODEL = "sim-model"
MAX_TOKENS = 6


def config(port):
    return sim_config(port, "--startup-delay", "1s", "--itl", "5ms", model=MODEL)


def run_client(base_url, model, max_tokens):
    node = shutil.which("node")
    assert node, "node is not installed (scripts/setup installs it)"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), \
        "the openai client is not installed: run scripts/setup (npm ci in test/e2e/node)"
    done = subprocess.run([node, SCRIPT, base_url, model, str(max_tokens)], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=90)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and len(lines) == 1, (done.returncode, done.stdout, done.stderr)
    return json.loads(lines[0])


def test_openai_npm_client_wakes_the_backend_streams_and_lists_models(procs):
    port = free_port()
    p = start_proxy(config(port))
    procs.append(p)
    assert p.backend()["state"] == "asleep"

    result = run_client(p.url, MODEL, MAX_TOKENS)

    pinned = json.loads((NODE_DIR / "package-lock.json").read_text())
    assert result["version"] == pinned["packages"]["node_modules/openai"]["version"]

    non_stream = result["nonstream"]
    assert non_stream["object"] == "chat.completion" and non_stream["role"] == "assistant"
    assert non_stream["content"], non_stream
    assert non_stream["completion_tokens"] == MAX_TOKENS
    assert non_stream["ms"] >= 900, "the first call should have waited for the 1s startup delay"

    stream = result["stream"]
    assert stream["content_chunks"] == MAX_TOKENS, stream
    assert stream["chunks"] == MAX_TOKENS + 1  # vLLM's first chunk carries only the role
    assert stream["role"] == "assistant" and stream["finish_reason"] == "length"
    assert stream["content"] == "".join(f"tok{i} " for i in range(MAX_TOKENS))

    models = {m["id"]: m for m in result["models"]}
    assert MODEL in models
    assert models[MODEL]["object"] == "model" and models[MODEL]["state"] == "ready"

    assert len(p.started_pids()) == 1
    p.settle()  # accounted once the last byte is written
    m = metrics(p.admin_url + "/metrics")
    assert m['vllm_autoscaler_wakes_total{backend="sim",result="success"}'] == 1
    assert m['vllm_autoscaler_requests_total{backend="sim",code="200"}'] == 2
