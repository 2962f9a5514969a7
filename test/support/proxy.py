"""Starting the real vllm-autoscaler binary for tests, with an inline YAML config."""

from __future__ import annotations

import json
import pathlib
import tempfile
import time

from support import BIN_DIR, Proc, http


class Proxy(Proc):
    port: int
    admin_port: int
    url: str
    admin_url: str

    def status(self) -> dict:
        code, _, body = http("GET", self.admin_url + "/status")
        assert code == 200
        return json.loads(body)

    def backend(self, name: str | None = None) -> dict:
        backends = self.status()["backends"]
        if name is None:
            return backends[0]
        return next(b for b in backends if b["name"] == name)

    def wait_state(self, state: str, name: str | None = None, timeout: float = 30) -> float:
        """Waits until the backend is in `state`; returns the monotonic time it was seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.backend(name)["state"] == state:
                return time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"backend never reached {state}: {self.status()}\n{self._tail()}")

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.output().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def events(self, msg: str) -> list[dict]:
        return [line for line in self.log_lines() if line.get("msg") == msg]


def start_proxy(config: str, *args, env: dict | None = None, wait: bool = True) -> Proxy:
    """Runs vllm-autoscaler with `config` (YAML text). Unless the config says otherwise it listens
    on 127.0.0.1 port 0 (public and admin); the ports are read from its `listening` log line."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="va-proxy-"))
    text = config
    if "listen:" not in text.split("backends:")[0]:
        text = "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n" + text
    path = d / "config.yaml"
    path.write_text(text)
    p = Proxy([BIN_DIR / "vllm-autoscaler", "--config", path, *args], env=env, name="vllm-autoscaler")
    if wait:
        try:
            p.wait_for_output('"msg":"listening"', timeout=15)
            line = next(l for l in p.log_lines() if l.get("msg") == "listening")
            p.port = int(line["public_port"])
            p.admin_port = int(line["admin_port"])
            p.url = f"http://127.0.0.1:{p.port}"
            p.admin_url = f"http://127.0.0.1:{p.admin_port}"
        except BaseException:
            p.stop()
            raise
    return p


def sim_command(port: int, model: str = "sim-model", *args) -> str:
    """The YAML list for a process-scaler command running vllm-sim."""
    parts = [str(BIN_DIR / "vllm-sim"), "--port", str(port), "--model", model, *map(str, args)]
    return json.dumps(parts)
