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

    def started_pids(self) -> list[int]:
        """The PIDs of the backend processes started so far, in order."""
        return [e["pid"] for e in self.events("backend process started")]

    def started_backends(self) -> list[str]:
        """The backend of every process start so far, in order."""
        return [e["backend"] for e in self.events("backend process started")]

    def settle(self, timeout: float = 20) -> None:
        """Waits until no request is in flight or pending on any backend: a response is
        accounted once its last byte is written, which the client may see first."""
        deadline = time.monotonic() + timeout
        while any(b["in_flight"] or b["pending"] for b in self.status()["backends"]):
            assert time.monotonic() < deadline, self.status()
            time.sleep(0.02)

    def assert_never_woken(self, name: str | None = None) -> dict:
        """No backend process was ever started and the backend is asleep with no wake; returns
        the backend's /status entry."""
        assert self.events("backend process started") == []
        b = self.backend(name)
        assert (b["state"], b["wakes"]) == ("asleep", 0)
        return b


def start_proxy(config: str, *args, env: dict | None = None, wait: bool = True,
                bin_dir: pathlib.Path | None = None, prefix: list[str] = ()) -> Proxy:
    """Runs vllm-autoscaler (from `bin_dir`, BIN_DIR by default) with `config` (YAML text), under
    the command `prefix` if given. Unless the config says otherwise it listens on 127.0.0.1 port 0
    (public and admin); the ports are read from its `listening` log line."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="va-proxy-"))
    text = config
    if "listen:" not in text.split("backends:")[0]:
        text = "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n" + text
    path = d / "config.yaml"
    path.write_text(text)
    p = Proxy([*prefix, (bin_dir or BIN_DIR) / "vllm-autoscaler", "--config", path, *args],
              env=env, name="vllm-autoscaler")
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


def backend_yaml(name: str, port: int, models: list[str], *sim_args, idle: str | None = "60s",
                 wake: str | None = "30s", stop_timeout: str | None = "5s",
                 default: bool | None = None, static: bool = False, extra: str = "") -> str:
    """One entry of `backends:` (YAML lines, each ending in a newline) with upstream
    127.0.0.1:`port`. Its scaler runs vllm-sim on that port for `models[0]` with `sim_args`,
    or is `{ type: static }` when `static`. `extra` (indented backend keys) goes right before
    the scaler; `None` leaves a timeout (or `default`) out."""
    text = _backend_head(name, f"http://127.0.0.1:{port}", models, idle, wake, default, extra)
    if static:
        return text + "    scaler: { type: static }\n"
    text += "    scaler:\n      type: process\n"
    text += f"      command: {sim_command(port, models[0], *sim_args)}\n"
    if stop_timeout is not None:
        text += f"      stop_timeout: {stop_timeout}\n"
    return text


def kubernetes_backend_yaml(name: str, upstream: str, models: list[str], *, namespace: str,
                            deployment: str, kubeconfig, replicas: int | None = 1,
                            idle: str | None = "60s", wake: str | None = "30s",
                            default: bool | None = None, extra: str = "", scaler: str = "") -> str:
    """One entry of `backends:` whose `kubernetes` scaler scales `namespace`/`deployment` with the
    credentials of `kubeconfig` (a path), in front of `upstream` (e.g. a test kubelet's
    service_url). `scaler`: more lines of the scaler's map (e.g. "      target_in_flight: 2\n").
    The other keywords as in backend_yaml."""
    text = _backend_head(name, upstream, models, idle, wake, default, extra)
    text += "    scaler:\n      type: kubernetes\n"
    text += f"      namespace: {namespace}\n      deployment: {deployment}\n"
    text += f"      kubeconfig: {json.dumps(str(kubeconfig))}\n"
    if replicas is not None:
        text += f"      replicas: {replicas}\n"
    return text + scaler


def _backend_head(name: str, upstream: str, models: list[str], idle: str | None, wake: str | None,
                  default: bool | None, extra: str) -> str:
    """The keys of a backend entry before its scaler."""
    lines = [f"  - name: {name}", f"    models: {json.dumps(list(models))}"]
    if default is not None:
        lines.append(f"    default: {'true' if default else 'false'}")
    lines.append(f"    upstream: {upstream}")
    if idle is not None:
        lines.append(f"    idle_timeout: {idle}")
    if wake is not None:
        lines.append(f"    wake_timeout: {wake}")
    return "".join(line + "\n" for line in lines) + extra


def config_yaml(*backends: str, top: str = "") -> str:
    """A whole config: the top-level lines `top` (e.g. "limits: { ... }"), then `backends:` with
    the given entries (from backend_yaml)."""
    if top and not top.endswith("\n"):
        top += "\n"
    return "\n" + top + "backends:\n" + "".join(backends)


def sim_config(port: int, *sim_args, top: str = "", model: str = "sim-model", **backend) -> str:
    """A config with the one backend `sim` serving `model`: a vllm-sim on `port` started on
    demand with `sim_args` (see backend_yaml for the other keywords)."""
    return config_yaml(backend_yaml("sim", port, [model], *sim_args, **backend), top=top)
