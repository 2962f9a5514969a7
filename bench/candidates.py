"""The candidates bench/run compares, and the backends behind them.

Every server runs on 127.0.0.1 on a port of its own, with its config written to a temp dir, as the
current user, and is stopped by PID (`Server.stop`). The candidates:

  direct           the backend itself (no proxy): the baseline the "added" numbers subtract
  vllm-autoscaler  one I/O thread, a static (always-on) backend, log level warn
  nginx            one worker; keep-alive upstream as nginx's docs recommend
  haproxy          one thread; keep-alive to the server as HAProxy's docs recommend

The configs are built by `nginx_proxy_conf`, `haproxy_conf` and `ours_conf`; bench/README.md shows
them and says why each line is there.
"""

from __future__ import annotations

import grp
import json
import os
import pathlib
import pwd
import resource
import shutil
import subprocess
import tempfile
import time

from proxy import backend_yaml, config_yaml, start_proxy
from support import BIN_DIR, Proc, free_port, start_sim, wait_port

CANDIDATES = ("direct", "vllm-autoscaler", "nginx", "haproxy")
PROXIES = CANDIDATES[1:]
LABELS = {"direct": "direct", "vllm-autoscaler": "vllm-autoscaler", "nginx": "nginx",
          "haproxy": "HAProxy"}
MODEL = "sim-model"

# The fixed answer of the scenario-1 backend: a chat completion of 400 bytes or so.
FIXED_ANSWER = json.dumps({
    "id": "chatcmpl-bench0000000000000000000000",
    "object": "chat.completion",
    "created": 1700000000,
    "model": MODEL,
    "choices": [{"index": 0,
                 "message": {"role": "assistant",
                             "content": "Hello! This is a fixed answer of about four hundred "
                                        "bytes, the same for every request."},
                 "logprobs": None, "finish_reason": "stop", "stop_reason": None}],
    "usage": {"prompt_tokens": 12, "total_tokens": 32, "completion_tokens": 20},
}, separators=(",", ":"))

# Peak VmHWM (MiB, summed over a candidate's processes) of every instance bench/run stopped.
peaks: dict[str, float] = {}


def raise_nofile() -> int:
    """Raises this process's soft RLIMIT_NOFILE to the hard limit (children inherit it) and
    returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def nofile() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------------------------------------
# Processes: CPU pinning and memory


def descendants(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for child in f.read().split():
                    out.append(int(child))
                    out.extend(descendants(int(child)))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pins every thread of `pid` and of its descendants to `cpus` (None: leaves them alone)."""
    if not cpus:
        return
    for p in [pid, *descendants(pid)]:
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                os.sched_setaffinity(int(tid), cpus)
        except (FileNotFoundError, ProcessLookupError):
            pass


def taskset(cpus: set[int] | None) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []


_MEM_KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def memory(pids: list[int]) -> dict | None:
    """VmRSS, VmHWM, RssAnon, RssFile (from /proc/PID/status) and Pss (smaps_rollup), in MiB,
    summed over `pids`; None when none of them is readable."""
    total = {k: 0.0 for k in (*_MEM_KEYS, "Pss")}
    seen = False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in _MEM_KEYS:
                        total[key] += int(rest.split()[0]) / 1024
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total["Pss"] += int(line.split()[1]) / 1024
            seen = True
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return {k: round(v, 2) for k, v in total.items()} if seen else None


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) of `pids` (their own threads, not reaped children), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return user / ticks, system / ticks


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids`, in seconds."""
    return sum(cpu_times(pids))


class Server:
    """A started candidate or backend: `.name`, `.port`, `.pids()`, `.memory()`, `.stop()`."""

    def __init__(self, name: str, port: int, proc: Proc | None, config: str = "",
                 config_dir: pathlib.Path | None = None):
        self.name = name
        self.port = port
        self.proc = proc
        self.config = config
        self.config_dir = config_dir  # removed by stop()

    def pids(self) -> list[int]:
        if self.proc is None or not self.proc.alive():
            return []
        return [self.proc.pid, *descendants(self.proc.pid)]

    def memory(self) -> dict | None:
        return memory(self.pids())

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())

    def cpu_times(self) -> tuple[float, float]:
        return cpu_times(self.pids())

    def output(self) -> str:
        return self.proc.output() if self.proc else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        mem = self.memory()
        if mem and self.name in PROXIES:
            peaks[self.name] = max(peaks.get(self.name, 0.0), mem["VmHWM"])
        self.proc.stop()
        if self.config_dir:
            shutil.rmtree(self.config_dir, ignore_errors=True)


class Direct(Server):
    """The "direct" candidate: the backend itself; it has no process of its own to measure."""

    def __init__(self, port: int):
        super().__init__("direct", port, None)


# ---------------------------------------------------------------------------------------------
# nginx


def _nginx_head(d: pathlib.Path, worker_connections: int) -> str:
    # Run as root (as in a container), nginx would switch its worker to `nobody`, which cannot
    # enter the 0700 temp dir: keep the worker as the current user, as for every other process.
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};\n"
    return f"""{user}worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {worker_connections}; }}
"""


def _nginx_paths(d: pathlib.Path) -> str:
    return "".join(f"  {k}_temp_path {d}/{k};\n"
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


# Client connections each server is sized for (from it: nginx worker_connections, HAProxy maxconn,
# vllm-autoscaler limits.max_connections) unless a scenario needs more. nginx and HAProxy allocate
# their connection tables up front, so this also sets part of their idle RSS; 1024 is near nginx's
# own defaults (512; Debian's nginx.conf: 768).
DEFAULT_CAPACITY = 1024


def nginx_backend_conf(d: pathlib.Path, port: int, capacity: int) -> str:
    """The backend of scenarios 1, 4 and 5: nginx answering POST /v1/chat/completions with
    FIXED_ANSWER. It never closes a keep-alive connection by itself, so the proxies' pools stay
    warm, and it has room for `capacity` clients beside the pools of all three proxies (256 idle
    connections each at most): nginx closes idle keep-alive connections when it runs short."""
    answer = FIXED_ANSWER.replace("\\", "\\\\").replace("'", "\\'")
    return _nginx_head(d, capacity + 1024) + f"""http {{
  access_log off;
{_nginx_paths(d)}  keepalive_timeout 300s;
  keepalive_requests 100000000;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /v1/chat/completions {{
      default_type application/json;
      return 200 '{answer}';
    }}
    location = /health {{ return 200 'ok'; }}
    location / {{ return 404; }}
  }}
}}
"""


def nginx_proxy_conf(d: pathlib.Path, port: int, upstream_port: int, sse: bool,
                     capacity: int) -> str:
    """nginx as a keep-alive reverse proxy (ngx_http_upstream_module, "keepalive"): an upstream
    block with a connection cache, HTTP/1.1 upstream and the Connection header cleared. Everything
    else at nginx's defaults. For SSE, `proxy_buffering off` (ngx_http_proxy_module: the response
    is passed to the client synchronously, as it arrives). A proxied request holds two
    connections: worker_connections is twice `capacity`."""
    sse_lines = "      proxy_buffering off;\n" if sse else ""
    return _nginx_head(d, 2 * capacity) + f"""http {{
  access_log off;
{_nginx_paths(d)}  upstream backend {{
    server 127.0.0.1:{upstream_port};
    keepalive 256;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
{sse_lines}    }}
  }}
}}
"""


def _start_nginx(name: str, conf_for, cpus, wrap: list[str]) -> Server:
    d = pathlib.Path(tempfile.mkdtemp(prefix=f"va-bench-{name}-"))
    port = free_port()
    conf = conf_for(d, port)
    if wrap:  # one process, the worker: callgrind_control does not reach a forked one
        conf = conf.replace("master_process on;", "master_process off;")
    (d / "nginx.conf").write_text(conf)
    proc = Proc([*taskset(cpus), *wrap, "nginx", "-p", d, "-c", d / "nginx.conf", "-e",
                 d / "error.log"], name=name)
    _wait_listening(proc, port)
    return Server(name, port, proc, conf, d)


def start_nginx_backend(cpus, capacity: int = DEFAULT_CAPACITY) -> Server:
    return _start_nginx("nginx-backend", lambda d, port: nginx_backend_conf(d, port, capacity),
                        cpus, [])


def start_nginx(upstream_port: int, cpus, sse: bool = False,
                capacity: int = DEFAULT_CAPACITY) -> Server:
    return _start_nginx(
        "nginx", lambda d, port: nginx_proxy_conf(d, port, upstream_port, sse, capacity), cpus,
        WRAP)


def _wait_listening(proc: Proc, port: int) -> None:
    try:
        deadline = time.monotonic() + 15
        while True:
            if not proc.alive():
                raise RuntimeError(
                    f"{proc.name} exited ({proc.returncode}):\n{proc.output()[-2000:]}")
            try:
                wait_port(port, timeout=0.2)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
    except BaseException:
        proc.stop()
        raise


# ---------------------------------------------------------------------------------------------
# HAProxy


def haproxy_conf(port: int, upstream_port: int, sse: bool, capacity: int) -> str:
    """HAProxy in HTTP mode with keep-alive on both sides and idle server connections shared
    between requests (`http-reuse safe`, the default since 2.0, written out). `maxconn` is four
    times `capacity`, at least 4096 and at most what the fd limit allows: at 1024 with 256 busy
    clients HAProxy 2.6 ran at half its rate here (twice the CPU per request); from 2048 up the
    limit made no difference. For SSE, `option http-no-delay`:
    without it HAProxy sends with MSG_MORE and the kernel may hold a small event back for up to
    200 ms; the configuration manual names it for exactly this ("interactive" payloads)."""
    sse_lines = "  option http-no-delay\n" if sse else ""
    maxconn = min(max(4 * capacity, 4096), (nofile() - 256) // 2)
    return f"""global
  nbthread 1
  maxconn {maxconn}

defaults
  mode http
  option http-keep-alive
  http-reuse safe
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
  timeout http-keep-alive 60s
{sse_lines}
frontend fe
  bind 127.0.0.1:{port}
  default_backend be

backend be
  server backend 127.0.0.1:{upstream_port}
"""


def start_haproxy(upstream_port: int, cpus, sse: bool = False,
                  capacity: int = DEFAULT_CAPACITY) -> Server:
    d = pathlib.Path(tempfile.mkdtemp(prefix="va-bench-haproxy-"))
    port = free_port()
    conf = haproxy_conf(port, upstream_port, sse, capacity)
    (d / "haproxy.cfg").write_text(conf)
    proc = Proc([*taskset(cpus), "haproxy", "-f", d / "haproxy.cfg", "-db"], name="haproxy")
    _wait_listening(proc, port)
    return Server("haproxy", port, proc, conf, d)


# ---------------------------------------------------------------------------------------------
# vllm-autoscaler


def ours_conf(port: int, admin_port: int, backend: str, capacity: int) -> str:
    top = (f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\nthreads: 1\n"
           f"log: {{level: warn}}\nlimits: {{max_connections: {capacity}}}")
    return config_yaml(backend, top=top)


def start_ours(upstream_port: int, cpus, *sim_args, wait_ready: bool = True,
               extra: str = "", capacity: int = DEFAULT_CAPACITY,
               bin_dir: pathlib.Path | None = None) -> Server:
    """vllm-autoscaler with one I/O thread in front of 127.0.0.1:`upstream_port`: a static
    (always-on) backend, or with `sim_args` a process scaler running vllm-sim with those args.
    `bin_dir`: another build's binary (BIN_DIR by default)."""
    port, admin_port = free_port(), free_port()
    if sim_args:
        backend = backend_yaml("bench", upstream_port, [MODEL], *sim_args, idle=None,
                               wake="10m", default=True, extra=extra)
    else:
        backend = backend_yaml("bench", upstream_port, [MODEL], static=True, idle=None,
                               wake=None, default=True, extra=extra)
    conf = ours_conf(port, admin_port, backend, capacity)
    # With log level warn the proxy does not print its `listening` line: the ports are ours.
    p = start_proxy(conf, wait=False, bin_dir=bin_dir, prefix=WRAP)
    p.port, p.admin_port = port, admin_port
    p.url, p.admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    pin(p.pid, cpus)
    _wait_listening(p, port)
    pin(p.pid, cpus)
    if wait_ready:
        p.wait_state("ready", timeout=15)
    server = Server("vllm-autoscaler" if bin_dir is None else f"vllm-autoscaler@{bin_dir}", port,
                    p, conf)
    server.admin_url = p.admin_url
    server.proxy = p
    return server


# ---------------------------------------------------------------------------------------------
# Backends and candidates


def start_sim_backend(cpus, *args) -> Server:
    sim = start_sim(None, MODEL, "--disable-access-log", *args)
    pin(sim.pid, cpus)
    return Server("vllm-sim", sim.port, sim)


# ---------------------------------------------------------------------------------------------
# The floors of bench/profile.py (bench/floor/): minimal proxies with none of our features


FLOORS = ("floor-coro", "floor-coro-typed", "floor-asio", "floor-epoll")

# A command that the candidates (not the backends) run under: bench/profile.py --instructions
# sets valgrind's callgrind here.
WRAP: list[str] = []


def start_floor(name: str, upstream_port: int, cpus) -> Server:
    port = free_port()
    proc = Proc([*taskset(cpus), *WRAP, BIN_DIR / name, str(port), str(upstream_port)], name=name)
    _wait_listening(proc, port)
    return Server(name, port, proc)


def start_candidate(name: str, upstream_port: int, cpus, sse: bool = False,
                    capacity: int = DEFAULT_CAPACITY) -> Server:
    """`name` in front of 127.0.0.1:`upstream_port`, sized for `capacity` client connections.
    `vllm-autoscaler@DIR` is the proxy built in DIR (another commit's, for a before/after)."""
    if name.startswith("vllm-autoscaler@"):
        return start_ours(upstream_port, cpus, capacity=capacity,
                          bin_dir=pathlib.Path(name.split("@", 1)[1]))
    if name in FLOORS:
        return start_floor(name, upstream_port, cpus)
    if name == "direct":
        return Direct(upstream_port)
    if name == "vllm-autoscaler":
        return start_ours(upstream_port, cpus, capacity=capacity)
    if name == "nginx":
        return start_nginx(upstream_port, cpus, sse, capacity)
    if name == "haproxy":
        return start_haproxy(upstream_port, cpus, sse, capacity)
    raise ValueError(name)


def version(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    text = (r.stdout + r.stderr).strip().splitlines()
    return text[0].strip() if text else ""
