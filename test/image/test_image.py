"""The container image serves. The image scripts/build-image built (in buildah's vfs storage) is
mounted read-only, and its own entrypoint runs in it as a container runtime would run it: chrooted,
as the image's USER 65532:65532, with the image's environment only, in front of a vllm-sim started
outside the chroot (same network namespace, loopback only).

Run as root after scripts/build-image (CI does both, .ci/run):

    /usr/bin/python3 -m pytest -q test/image

Without the image, or without root, every test fails and says what to do. VA_IMAGE names another
image; vllm-sim comes from VA_BIN_DIR (build/debug/bin by default). The time from exec to /readyz
200 is printed and recorded in build/image/image-test.json (and as a junit property).
"""

import json
import os
import subprocess
import time

import pytest

import image_root
import support
from support import REPO, chat, http, sim_last_request

IMAGE = image_root.default_image()
USER = "65532:65532"
ENTRYPOINT = "/usr/local/bin/vllm-autoscaler"


@pytest.fixture(scope="module")
def root():
    """The image's root filesystem, mounted read-only; unmounted and its working container
    removed after the module's tests."""
    if os.geteuid() != 0:
        pytest.fail("the image test needs root (buildah's storage, bind mounts, chroot): "
                    "sudo /usr/bin/python3 -m pytest test/image", pytrace=False)
    try:
        r = image_root.ImageRoot(IMAGE)
    except LookupError as e:
        pytest.fail(str(e), pytrace=False)
    with r:
        yield r


@pytest.fixture
def sim():
    """A vllm-sim on an ephemeral loopback port, outside the image; stopped by PID after the
    test."""
    p = support.start_sim(0, "sim-model")
    yield p
    p.stop()


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def root_mount(pid: int) -> list[str]:
    """The fields of the mount the process sees as "/" (the last one: the one on top)."""
    with open(f"/proc/{pid}/mountinfo") as f:
        mounts = [line.split() for line in f]
    tops = [m for m in mounts if m[4] == "/"]
    assert tops, mounts
    return tops[-1]


def test_image_config_runs_the_binary_as_numeric_non_root_user(root):
    config = root.config
    assert config.get("User") == USER
    assert config.get("Entrypoint") == [ENTRYPOINT]
    assert set(config.get("ExposedPorts", {})) == {"8080/tcp", "8081/tcp"}


def test_image_holds_the_binary_and_no_build_tools(root):
    assert (root.path / ENTRYPOINT.lstrip("/")).is_file()
    for build_only in ("usr/bin/g++", "usr/bin/cmake", "usr/include/boost", "src"):
        assert not (root.path / build_only).exists(), f"/{build_only} in the runtime image"
    done = subprocess.run(root.command("--version"), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert image_root.version() in done.stdout


def test_root_filesystem_is_read_only(root):
    # /tmp is world-writable: on a writable root the image's user could create a file there.
    for user, path in ((USER, "/tmp/x"), ("0:0", "/x")):
        done = subprocess.run(root.exec_command("/usr/bin/touch", path, user=user),
                              capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and "Read-only file system" in done.stderr, (user, done)


def test_image_serves_a_chat_completion_through_the_proxy(root, sim, record_property):
    proc, took, port, admin = image_root.start_ready(
        root, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--upstream", sim.url, "--model", "sim-model", "--log-format", "json")
    try:
        print(f"\n{IMAGE}: exec to /readyz 200 in {took * 1000:.0f} ms")
        record_property("start_to_readyz_seconds", round(took, 4))
        out = REPO / "build" / "image" / "image-test.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"image": IMAGE, "start_to_readyz_seconds": round(took, 4),
                                   "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")

        # The process is the image's binary, chrooted into the read-only image root, as 65532.
        assert os.readlink(f"/proc/{proc.pid}/root") == str(root.path)
        assert os.readlink(f"/proc/{proc.pid}/exe") == str(root.path) + ENTRYPOINT
        status = proc_status(proc.pid)
        assert status["Uid"].split() == ["65532"] * 4, status["Uid"]
        assert status["Gid"].split() == ["65532"] * 4, status["Gid"]
        assert status["Groups"].split() in ([], ["65532"]), status["Groups"]
        assert status["CapEff"] == "0000000000000000", status["CapEff"]
        mount = root_mount(proc.pid)
        assert "ro" in mount[5].split(","), mount

        code, _, body = http("GET", f"http://127.0.0.1:{admin}/readyz")
        assert code == 200, body
        code, _, body = http("GET", f"http://127.0.0.1:{admin}/healthz")
        assert code == 200, body

        request = chat(max_tokens=3, model="sim-model", content="through the image")
        code, _, body = http("POST", f"http://127.0.0.1:{port}/v1/chat/completions", request)
        assert code == 200, body
        doc = json.loads(body)
        assert doc["object"] == "chat.completion"
        assert doc["model"] == "sim-model"
        assert doc["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
        # Answered by the sim: it saw this very request, forwarded by the proxy.
        seen = sim_last_request(sim.url)
        assert (seen["method"], seen["target"]) == ("POST", "/v1/chat/completions"), seen
        assert seen["body_bytes"] == len(json.dumps(request)), seen
    finally:
        code = proc.stop()
    assert code == 0, f"exit {code} on SIGTERM:\n{proc.output()[-4000:]}"
