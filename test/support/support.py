"""Shared helpers for the end-to-end and integration tests (Python 3.11 standard library only).

Start the built binaries as a user would (`Proc`, `start_sim`), talk to them over loopback
(`http`, `sse_events`, `metrics`) and always clean up: every `Proc` is stopped by its context
manager, by a fixture, or at the latest when the interpreter exits.
"""

from __future__ import annotations

import atexit
import http.client as _httpclient
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("VA_BIN_DIR", REPO / "build" / "debug" / "bin")).resolve()

__all__ = [
    "BIN_DIR",
    "REPO",
    "CHAT",
    "Proc",
    "chat",
    "eventually",
    "free_port",
    "http",
    "metrics",
    "pid_alive",
    "refused",
    "sim_last_request",
    "sse_events",
    "start_sim",
    "wait_pid_gone",
    "wait_port",
    "RawUpstream",
    "sanitized",
    "serve_requests",
    "read_head",
    "SANITIZER_MARKS",
    "sanitizer_reports",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Returns once a TCP connect to host:port succeeds; raises TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as e:
            last = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} not accepting connections after {timeout}s: {last}")
        time.sleep(0.02)


def refused(port: int, host: str = "127.0.0.1") -> bool:
    """True when a TCP connect to host:port is refused (nothing listens); False when it succeeds,
    or when it is reset: the kernel completed the handshake into a listener's backlog and the
    listener closed before accepting it. That happens only while a listener is closing, so a
    caller polling with `eventually` sees the refusal on its next try."""
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_pid_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still running"
        time.sleep(0.02)


def eventually(check, timeout: float = 20.0, what: str = "condition"):
    """Polls `check()` every 20 ms until it returns a truthy value and returns that; fails the
    test when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not seen within {timeout}s"
        time.sleep(0.02)


def chat(max_tokens: int = 3, model: str | None = "sim-model", stream: bool = False,
         content: str = "hi") -> dict:
    """A chat completion request body with one user message; no "model" when `model` is None,
    "stream": true only when `stream`."""
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    if model is not None:
        body = {"model": model, **body}
    if stream:
        body["stream"] = True
    return body


CHAT = chat()


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer")


def sanitizer_reports(logs: dict[str, str]) -> list[str]:
    """"name:\n<the end of the log>" for each of `logs` ({name: log text}) that holds a report of
    AddressSanitizer, LeakSanitizer, UBSan or ThreadSanitizer (the tests also run on the ASan+UBSan
    build; bench/soak.py on the TSan one)."""
    return [f"{name}:\n{text[-4000:]}" for name, text in logs.items()
            if any(mark in text for mark in SANITIZER_MARKS)]


_live: set["Proc"] = set()


class Proc:
    """A started process with stdout+stderr merged into `log_path`, in its own session.

    `env` entries are added to (not substituted for) the current environment.
    """

    def __init__(self, args: list, env: dict | None = None, name: str = ""):
        self.args = [str(a) for a in args]
        self.name = name or pathlib.Path(self.args[0]).name
        self._dir = pathlib.Path(tempfile.mkdtemp(prefix=f"va-{self.name}-"))
        self.log_path = self._dir / f"{self.name}.log"
        full_env = dict(os.environ)
        if env:
            full_env.update({k: str(v) for k, v in env.items()})
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        self.pid = self.popen.pid
        self.started_at = time.monotonic()
        _live.add(self)

    def __repr__(self) -> str:
        return f"Proc({self.name}, pid={self.pid}, log={self.log_path})"

    def output(self) -> str:
        """Everything the process has written so far (stdout and stderr, interleaved)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def wait_for_output(self, text: str, timeout: float = 10) -> None:
        """Returns once `text` appears in the output; raises TimeoutError (with the log) if the
        timeout passes or the process exits without printing it."""
        deadline = time.monotonic() + timeout
        while True:
            if text in self.output():
                return
            if not self.alive():
                if text in self.output():
                    return
                raise TimeoutError(
                    f"{self.name} exited ({self.popen.returncode}) without printing {text!r}:\n"
                    + self._tail()
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} did not print {text!r} in {timeout}s:\n" + self._tail())
            time.sleep(0.02)

    def wait(self, timeout: float = 10) -> int:
        """Waits for the process to exit by itself; returns its exit code (-N: killed by signal N).
        Raises subprocess.TimeoutExpired if it is still running after `timeout`."""
        code = self.popen.wait(timeout)
        _live.discard(self)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        """Sends `sig` to the process, waits up to `timeout`, then SIGKILLs its process group.
        Returns the exit code (-N when a signal ended it)."""
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.popen.wait(5)
        _live.discard(self)
        return self.popen.returncode

    def _kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def __enter__(self) -> "Proc":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_leftovers() -> None:
    for p in list(_live):
        if p.alive():
            p._kill_group()


_STARTED = "Application startup complete."
_LISTEN_RE = re.compile(r"Starting vLLM API server on http://[^\s]*:(\d+)")


def start_sim(port: int | None = None, model: str = "sim-model", *extra_args, wait: bool = True,
              env: dict | None = None) -> Proc:
    """Starts BIN_DIR/vllm-sim on 127.0.0.1. `port=None` picks a free port; `port=0` lets the sim
    pick one (then `wait` must stay True to learn it). With `wait`, returns once the sim listens,
    unless `--startup-delay` or `--fail-at-start` is among `extra_args`. The Proc gets `.port`
    and `.url` ("http://127.0.0.1:PORT"). `env` entries are added to the environment."""
    if port is None:
        port = free_port()
    args = [BIN_DIR / "vllm-sim", "--port", port, "--model", model, *extra_args]
    proc = Proc(args, env=env, name=f"vllm-sim-{port}")
    proc.port = port
    delayed = any(str(a).startswith(("--startup-delay", "--fail-at-start")) for a in extra_args)
    if wait and (not delayed or port == 0):
        try:
            # The sim prints this after listen(), so no probe connection is needed (it would show
            # up in vllm_sim_connections_total).
            proc.wait_for_output(_STARTED, timeout=15)
            if port == 0:
                proc.port = int(_LISTEN_RE.search(proc.output()).group(1))
        except BaseException:
            proc.stop()
            raise
    proc.url = f"http://127.0.0.1:{proc.port}"
    return proc


def _split(url: str) -> tuple[str, int, str]:
    u = urllib.parse.urlsplit(url)
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    return u.hostname or "127.0.0.1", u.port or 80, path


def _encode(body, headers: dict) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, (dict, list)):
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        return json.dumps(body).encode()
    if isinstance(body, str):
        return body.encode()
    return bytes(body)


def _header_dict(resp: _httpclient.HTTPResponse) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in resp.getheaders():
        k = k.lower()
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


def http(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 30):
    """One request on a fresh connection. Returns (status, {lowercase header: value}, body bytes).
    A dict/list body is sent as JSON."""
    host, port, path = _split(url)
    hdrs = dict(headers or {})
    data = _encode(body, hdrs)
    conn = _httpclient.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, _header_dict(resp), payload
    finally:
        conn.close()


def sse_events(url: str, body, headers: dict | None = None, timeout: float = 60) -> list[tuple[float, str]]:
    """POSTs `body` and reads the SSE reply as it arrives. Returns one (time.monotonic() when the
    event's first line arrived, data payload) per event, through `[DONE]` or the end of the body.
    Raises AssertionError when the status is not 200."""
    host, port, path = _split(url)
    hdrs = dict(headers or {})
    data = _encode(body, hdrs)
    conn = _httpclient.HTTPConnection(host, port, timeout=timeout)
    events: list[tuple[float, str]] = []
    try:
        conn.request("POST", path, body=data, headers=hdrs)
        resp = conn.getresponse()
        if resp.status != 200:
            raise AssertionError(f"POST {url}: {resp.status} {resp.read()!r}")
        started: float | None = None
        lines: list[str] = []
        while True:
            raw = resp.readline()
            if not raw:
                break
            now = time.monotonic()
            line = raw.decode().rstrip("\r\n")
            if line == "":
                done = lines == ["[DONE]"]
                if lines:
                    events.append((started, "\n".join(lines)))
                lines, started = [], None
                if done:
                    break
                continue
            if started is None:
                started = now
            if line.startswith("data:"):
                lines.append(line[5:].removeprefix(" "))
        if lines:
            events.append((started, "\n".join(lines)))
        return events
    finally:
        conn.close()


def sim_last_request(sim) -> dict:
    """The sim's record of the last request it received (`sim`: its port or base URL)."""
    base = f"http://127.0.0.1:{sim}" if isinstance(sim, int) else sim
    status, _, body = http("GET", base + "/sim/last-request")
    assert status == 200
    return json.loads(body)


def metrics(url: str) -> dict[str, float]:
    """GETs Prometheus text (from `url`, or `url`/metrics when it has no path) and returns
    {"name{labels}": value} with the labels exactly as written; unlabelled samples are "name"."""
    host, port, path = _split(url)
    if path == "/":
        path = "/metrics"
    status, _, body = http("GET", f"http://{host}:{port}{path}")
    if status != 200:
        raise AssertionError(f"GET {url}: {status} {body!r}")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            end = line.rindex("}")
            key, rest = line[: end + 1], line[end + 1 :].split()
        else:
            key, *rest = line.split()
        out[key] = float(rest[0])
    return out


def serve_requests(conn, handle) -> None:
    """The loop of a RawUpstream handler: reads request heads from `conn` one after another,
    answers `GET /health` with 200 itself, and for every other request calls
    `handle(conn, head, rest)` (`rest`: what arrived after the head), which returns the bytes it
    read past its request (b"" for none), or None to stop."""
    data = b""
    while True:
        got = read_head(conn, data)
        if got is None:
            return
        head, data = got
        if head.startswith(b"GET /health"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            continue
        data = handle(conn, head, data)
        if data is None:
            return


def read_body(conn, head: bytes, data: bytes) -> tuple[bytes, bytes] | None:
    """For a serve_requests handler: the body of the request whose head is `head`, as long as its
    Content-Length says (none: empty; the proxy never sends a chunked body), read from `conn` after
    `data`. Returns (body, the bytes that came after it), or None when `conn` closes first."""
    want = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            want = int(value)
            break
    while len(data) < want:
        part = conn.recv(65536)
        if not part:
            return None
        data += part
    return data[:want], data[want:]


def sanitized() -> bool:
    """True when BIN_DIR holds an AddressSanitizer build: its allocator adds redzones and keeps
    freed memory in quarantine, so memory figures run several times higher."""
    return b"__asan_init" in (BIN_DIR / "vllm-autoscaler").read_bytes()


class RawUpstream:
    """A fake upstream on 127.0.0.1 for tests that need byte-level control: `handle(conn)` runs in
    a thread of its own for each accepted connection, which it closes when it returns. `.port`,
    `.close()`."""

    def __init__(self, handle):
        self._handle_conn = handle
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self):
        self.sock.close()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        with conn:
            try:
                self._handle_conn(conn)
            except OSError:
                pass


def read_until_closed(sock) -> bytes:
    """Everything `sock` receives until the peer closes it (or resets it)."""
    reply = b""
    try:
        while (part := sock.recv(65536)):
            reply += part
    except ConnectionResetError:
        pass
    return reply


def read_head(sock, data: bytes = b"") -> tuple[bytes, bytes] | None:
    """Reads from `sock` (after `data` already read) until a blank line: returns (head, what came
    after it), or None when the peer closed first."""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            return None
        data += part
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest
