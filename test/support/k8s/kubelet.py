#!/usr/bin/env python3
"""A small test kubelet for the real control plane of control-plane.sh (Python 3.11 stdlib only).

There is no kubelet and no scheduler in the test control plane. This one watches the pods that match
a label selector in one namespace, "runs" each on its own loopback address with one vllm-sim, and
writes the pod's status from what vllm-sim does, so that the real ReplicaSet/Deployment controllers
count `readyReplicas` and the real EndpointSlice controller publishes the pod's address. With
`service_proxy=True` it also stands in for kube-proxy and the Service in front of those pods.

    python3 test/support/k8s/kubelet.py --env DIR --namespace NS --selector app=vllm --sim build/debug/bin/vllm-sim [--service-proxy]

    from k8s.kubelet import Kubelet        # or importlib from this path
    kl = Kubelet(env_dir, "default", "app=vllm", sim_binary, service_proxy=True).start()
    ... kl.address_of(pod_name) -> "127.0.0.2" ... kl.service_url -> "http://127.0.0.1:40123" ...
    kl.stop()                             # stops every vllm-sim it started (by PID / process group)

What it does with a pod (matching the selector, in the namespace, not bound to another node):
- Scheduling: it creates the Node `test-node` (once; status Ready, capacity incl. nvidia.com/gpu: 1)
  and binds the pod to it through the `pods/binding` subresource, as the scheduler would. Checked on
  1.20.2: the Deployment/ReplicaSet controllers count `readyReplicas` from the Ready condition alone
  (no nodeName needed), but (a) without a nodeName the apiserver deletes a pod at once instead of
  gracefully (no Terminating phase, no grace period for the sim), and (b) the EndpointSlice controller
  fails with `node "" not found` and publishes no endpoint. Hence the Node + binding.
- Address: the lowest free 127.0.0.x, x from 2 (`first_address`) up to 254, reused once freed.
  Free means: not held by a pod of any test kubelet on the machine (flock on
  $TMPDIR/vllm-autoscaler-test-kubelet/127.0.0.x, so kubelets of parallel control planes never
  share an address) and nothing listening on the pod's port there. Nothing outside 127.0.0.0/8 is
  ever used.
- vllm-sim: `SIM --host 127.0.0.x --port P ARGS`, P = the first container's `ports[0].containerPort`
  (default 8000). ARGS convention: the first container's `args` are read as vLLM/vllm-sim flags and
  only vllm-sim's own flags are passed on (`--model`, `--startup-delay`, `--ttft`, `--itl`,
  `--keep-alive-timeout`, `--shutdown-delay`, `--max-tokens`, `--api-key`, `--exit-after`,
  `--fail-at-start`, `--fail-message`, `--die-mid-stream-after`, `--block-size`,
  `--prefix-cache-blocks`, `--prefill-per-token`, `--event-timestamps`,
  `--disable-access-log`; `--flag value` and `--flag=value`). vLLM's `--served-model-name X` becomes
  `--model X` (the sim's --model is the served name) and wins over `--model`. Anything else (the
  image, `command`, `--port`, `--host`, other vLLM flags and their values) is ignored. So an example
  pod spec passes e.g. `args: ["--model", "m", "--startup-delay", "1s"]`. Other containers of the pod
  are reported running and ready without any process.
- Status (merge patch of /status, full lists each time): phase, podIP/podIPs, hostIP 127.0.0.1,
  startTime, conditions PodScheduled/Initialized/ContainersReady/Ready (lastTransitionTime changes only
  with the status), containerStatuses (waiting ContainerCreating -> running, ready, restartCount,
  lastState). Ready turns True only when GET /health (or the container's readinessProbe.httpGet.path)
  on 127.0.0.x:P answers 200; it is re-probed every `probe_period` s (2) and turns False again when the
  probe fails. Note: the probes are connections to the sim (they show in its metrics).
- vllm-sim exits by itself (e.g. `--fail-at-start 1`, `--exit-after N`): like restartPolicy Always:
  lastState terminated (exitCode, reason Error/Completed, message = the end of its log), restartCount
  +1, waiting CrashLoopBackOff for `crash_backoff` s doubling up to `crash_backoff_max`, then restart.
- Deletion: when deletionTimestamp appears, SIGTERM to the sim's process group, wait up to
  deletionGracePeriodSeconds (then SIGKILL), then DELETE with gracePeriodSeconds=0 (uid precondition)
  and free the address. A DELETED event (force delete) stops the sim the same way.
- Failures from the annotation `vllm-autoscaler.test/simulate` (pod template annotations are copied
  to the pod; annotating a pod directly works too):
    crashloop      no sim; bound; phase Running; waiting CrashLoopBackOff, restartCount +1 after each
                   back-off (`crash_backoff` s doubling up to `crash_backoff_max`: 2, 4, 8, 16, 20 s),
                   lastState terminated exitCode 1 reason Error with a message
    imagepull      no sim; bound; phase Pending; waiting ErrImagePull, then ImagePullBackOff,
                   alternating every `crash_backoff` s (as the kubelet does); removing the annotation
                   lets the "pull" succeed and the pod start normally
    unschedulable  no sim; not bound; phase Pending; PodScheduled False reason Unschedulable,
                   "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."; removing the annotation
                   lets it be scheduled and start normally
- Watch: list, then watch from the list's resourceVersion with bookmarks; a watch that ends is resumed
  from the last resourceVersion; HTTP 410 or an ERROR event (410/Expired/Gone) -> re-list. The API
  being down (apiserver restart) is retried with backoff; status writes retry for up to 30 s.
- Service proxy (`service_proxy=True`; there is no kube-proxy): `ServiceProxy` listens on
  127.0.0.1:<ephemeral port> (`service_port`, `service_url`) and relays each accepted TCP connection
  to one of `endpoints()`, the pods of this kubelet that are Ready (the last probe answered 200 and
  the status says so) and not terminating, round-robin, byte for byte in both directions (two threads
  per connection, no timeouts, half-close passed on, a reset passed on as a reset). With no such pod
  the connection is reset at once, as a Service without endpoints refuses it. Connections already
  relayed to a pod that turns unready or terminating stay until one side closes them (as with
  kube-proxy); `service_connections()` counts the open ones. This is what the proxy under test
  uses as its `upstream` (in a cluster: the vLLM Service).
- stop(): closes the service proxy's listener and every relayed connection, stops the watch and
  every sim it started (SIGTERM, then SIGKILL of its process group after 5 s); it leaves the pods
  and the Node as they are (as a dead kubelet would).

Found on 1.20.2 (for the proxy and the tests): core/v1 Endpoints never get a 127.0.0.x address (the
endpoint controller logs `may not be in the loopback range` as a Warning event, FailedToUpdateEndpoint);
EndpointSlices do, as `discovery.k8s.io/v1beta1` (v1 is 1.21+). Terminating pods leave the slice.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import fcntl
import http.client
import json
import os
import pathlib
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

__all__ = ["Kubelet", "ServiceProxy", "SIMULATE_ANNOTATION", "sim_args_from_container"]

SIMULATE_ANNOTATION = "vllm-autoscaler.test/simulate"
NODE_NAME = "test-node"
HOST_IP = "127.0.0.1"
# Address reservations shared by all test kubelets on the machine (several control planes may run
# at once, and a sim with --startup-delay does not listen yet when the next address is picked).
ADDRESS_LOCK_DIR = pathlib.Path(tempfile.gettempdir()) / "vllm-autoscaler-test-kubelet"
USER_AGENT = "vllm-autoscaler-test-kubelet/1"  # not curl's: 1.20 pretty-prints JSON for curl badly

# vllm-sim flags taken from the container's args: name -> takes a value
_SIM_FLAGS = {
    "--model": True,
    "--startup-delay": True,
    "--ttft": True,
    "--itl": True,
    "--keep-alive-timeout": True,
    "--shutdown-delay": True,
    "--max-tokens": True,
    "--api-key": True,
    "--exit-after": True,
    "--fail-at-start": True,
    "--fail-message": True,
    "--die-mid-stream-after": True,
    "--block-size": True,
    "--prefix-cache-blocks": True,
    "--prefill-per-token": True,
    "--event-timestamps": False,
    "--disable-access-log": False,
}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sim_args_from_container(args: list[str] | None) -> list[str]:
    """The vllm-sim flags among a container's args (see the module doc for the convention)."""
    out: list[str] = []
    served: str | None = None
    args = list(args or [])
    i = 0
    while i < len(args):
        a = str(args[i])
        i += 1
        if not a.startswith("--"):
            continue  # a positional (e.g. `serve MODEL`) or the value of an ignored flag
        name, eq, value = a.partition("=")
        if name == "--served-model-name":
            if not eq and i < len(args):
                value = str(args[i])
                i += 1
            served = value
            continue
        takes_value = _SIM_FLAGS.get(name)
        if takes_value is None:
            # Unknown flag: skip its value too when it has one in the next arg.
            if not eq and i < len(args) and not str(args[i]).startswith("--"):
                i += 1
            continue
        if takes_value:
            if not eq:
                if i >= len(args):
                    continue
                value = str(args[i])
                i += 1
            out += [name, value]
        else:
            out.append(name)
    if served is not None:
        kept: list[str] = []
        j = 0
        while j < len(out):
            if out[j] == "--model":
                j += 2
                continue
            kept.append(out[j])
            j += 1
        out = ["--model", served, *kept]
    return out


def _read_env(env_dir: str | os.PathLike) -> dict[str, str]:
    env = {}
    for line in (pathlib.Path(env_dir) / "env").read_text().splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() and not k.startswith("#"):
            env[k.strip()] = v.strip()
    for k in ("KUBE_SERVER", "KUBE_CA_FILE", "KUBE_ADMIN_TOKEN"):
        if k not in env:
            raise ValueError(f"{env_dir}/env has no {k}")
    return env


class ApiError(Exception):
    def __init__(self, code: int, body: dict | str, what: str):
        self.code = code
        self.body = body
        reason = body.get("reason", "") if isinstance(body, dict) else ""
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{what}: HTTP {code} {reason}: {message}")


class _Expired(Exception):
    pass


class _Api:
    """HTTPS + JSON to the apiserver with the admin bearer token; one connection per request."""

    def __init__(self, server: str, ca_file: str, token: str):
        u = urllib.parse.urlsplit(server)
        self.host = u.hostname
        self.port = u.port or 443
        self.token = token
        self.ctx = ssl.create_default_context(cafile=ca_file)

    def connect(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def headers(self, content_type: str | None = None, token: str | None = None) -> dict:
        h = {"Authorization": f"Bearer {token or self.token}", "Accept": "application/json",
             "User-Agent": USER_AGENT}
        if content_type:
            h["Content-Type"] = content_type
        return h

    def call(self, method: str, path: str, body=None, content_type: str = "application/json",
             timeout: float = 10, token: str | None = None) -> tuple[int, dict | str]:
        """(HTTP status, the body parsed as JSON, or as text when it is not JSON); `token` instead
        of the admin token."""
        conn = self.connect(timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=self.headers(content_type if data else None, token))
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = raw.decode(errors="replace")
        return resp.status, parsed

    def request(self, method: str, path: str, body=None, content_type: str = "application/json",
                timeout: float = 10) -> dict:
        """The parsed body of a 2xx answer; ApiError otherwise."""
        status, parsed = self.call(method, path, body, content_type, timeout)
        if status >= 300:
            raise ApiError(status, parsed, f"{method} {path}")
        return parsed


class _PodWorker:
    """One pod: a thread that binds, starts/monitors vllm-sim or simulates a failure, writes the
    status, and finalizes the deletion."""

    def __init__(self, kubelet: "Kubelet", pod: dict):
        self.k = kubelet
        self.pod = pod
        md = pod["metadata"]
        self.name = md["name"]
        self.uid = md["uid"]
        self.ns = md.get("namespace", kubelet.namespace)
        spec = pod.get("spec", {})
        containers = spec.get("containers") or [{"name": "main"}]
        self.containers = containers
        c0 = containers[0]
        ports = c0.get("ports") or []
        self.port = int(ports[0].get("containerPort", 8000)) if ports else 8000
        self.sim_args = sim_args_from_container(c0.get("args"))
        probe = c0.get("readinessProbe") or c0.get("startupProbe") or {}
        self.health_path = (probe.get("httpGet") or {}).get("path") or "/health"
        self.addr: str | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path: pathlib.Path | None = None
        self.log_offset = 0
        self.start_time: str | None = None
        self.cond_times: dict[str, tuple[str, str]] = {}
        self.changed = threading.Event()  # deletion, DELETED, stop, or an annotation change
        self.deleting = False  # deletionTimestamp seen
        self.gone = False  # DELETED seen / 404
        self.stopping = False  # kubelet stop: leave the API alone
        self.ready = False  # the last probe result while the sim runs (the service proxy's endpoints)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"kubelet-{self.name}", daemon=True)

    # --- called from the watch thread ---
    def update(self, pod: dict) -> None:
        with self.lock:
            old_mode = self.mode()
            self.pod = pod
            if pod["metadata"].get("deletionTimestamp"):
                self.deleting = True
            if self.deleting or self.mode() != old_mode:
                self.changed.set()

    def mark_gone(self) -> None:
        self.gone = True
        self.changed.set()

    def request_stop(self) -> None:
        self.stopping = True
        self.changed.set()

    def mode(self) -> str:
        ann = self.pod["metadata"].get("annotations") or {}
        return ann.get(SIMULATE_ANNOTATION, "").strip()

    def done(self) -> bool:
        return self.deleting or self.gone or self.stopping

    def endpoint(self) -> tuple[str, int] | None:
        """(address, port) while the pod is Ready and not terminating, as an EndpointSlice would
        list it; None otherwise."""
        proc = self.proc
        if self.ready and not self.done() and proc is not None and proc.poll() is None:
            return self.addr, self.port
        return None

    def _wait(self, seconds: float) -> bool:
        """Sleeps up to `seconds`; True when woken by deletion/stop/annotation change."""
        woke = self.changed.wait(seconds)
        self.changed.clear()
        if self.done():
            self.changed.set()  # stay woken
        return woke

    # --- the worker thread ---
    def _run(self) -> None:
        try:
            self._lifecycle()
        except Exception as e:  # noqa: BLE001 - a test helper must report, not die silently
            self.k._log(f"{self.name}: worker error: {e!r}")
        finally:
            self._teardown()

    def _lifecycle(self) -> None:
        if self.pod["metadata"].get("deletionTimestamp"):
            return
        while not self.done() and self.mode() == "unschedulable":
            self._status_unschedulable()
            self._wait(3600)
        if self.done():
            return
        if not self.pod.get("spec", {}).get("nodeName"):
            self._bind()
        if self.done():
            return
        self.start_time = _now()
        self.addr = self.k._allocate(self.name, self.port, self.pod.get("status", {}).get("podIP"))
        self.k._log(f"{self.name}: bound to {NODE_NAME}, address {self.addr}:{self.port}")
        if self.mode() == "imagepull":
            self._imagepull()
        if self.done():
            return
        if self.mode() == "crashloop":
            self._crashloop()
            return
        self._run_sim()

    def _bind(self) -> None:
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": self.name, "uid": self.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME}}
        try:
            self.k._retry(lambda: self.k.api.request(
                "POST", f"/api/v1/namespaces/{self.ns}/pods/{self.name}/binding", body), f"bind {self.name}")
        except ApiError as e:
            if e.code == 404:
                self.gone = True
            elif e.code != 409:  # 409: already bound
                raise

    # status building
    def _cond(self, ctype: str, status: bool, reason: str = "", message: str = "") -> dict:
        s = "True" if status else "False"
        prev = self.cond_times.get(ctype)
        t = prev[1] if prev and prev[0] == s else _now()
        self.cond_times[ctype] = (s, t)
        c = {"type": ctype, "status": s, "lastProbeTime": None, "lastTransitionTime": t}
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        return c

    def _container_statuses(self, first: dict) -> list[dict]:
        c0 = self.containers[0]
        out = [{"name": c0.get("name", "main"), "image": c0.get("image", ""), "imageID": "", **first}]
        if "running" in first.get("state", {}) or "lastState" in first:  # a container was created
            out[0]["containerID"] = f"sim://{self.uid[:8]}-{first.get('restartCount', 0)}"
        for c in self.containers[1:]:
            out.append({"name": c.get("name", ""), "image": c.get("image", ""), "imageID": "",
                        "ready": True, "restartCount": 0, "started": True,
                        "state": {"running": {"startedAt": self.start_time}}})
        return out

    def _patch_status(self, phase: str, ready: bool, first: dict | None, scheduled: bool = True,
                      sched_msg: str = "") -> None:
        if self.gone or self.stopping:
            return
        name0 = self.containers[0].get("name", "main")
        unready = f"containers with unready status: [{name0}]"
        conds = [self._cond("PodScheduled", scheduled, "" if scheduled else "Unschedulable", sched_msg)]
        status: dict = {"phase": phase, "conditions": conds}
        if scheduled:
            conds[:0] = [self._cond("Initialized", True)]
            conds += [self._cond("ContainersReady", ready, "" if ready else "ContainersNotReady",
                                 "" if ready else unready),
                      self._cond("Ready", ready, "" if ready else "ContainersNotReady", "" if ready else unready)]
            status.update({"hostIP": HOST_IP, "podIP": self.addr, "podIPs": [{"ip": self.addr}],
                           "startTime": self.start_time,
                           "containerStatuses": self._container_statuses(first or {})})
        path = f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status"
        try:
            self.k._retry(lambda: self.k.api.request("PATCH", path, {"status": status},
                                                     "application/merge-patch+json"),
                          f"status {self.name}", give_up=lambda: self.gone or self.stopping)
        except ApiError as e:
            if e.code == 404:
                self.gone = True
                self.changed.set()
            else:
                self.k._log(f"{self.name}: status patch failed: {e}")

    def _status_unschedulable(self) -> None:
        self._patch_status("Pending", False, None, scheduled=False,
                           sched_msg="0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")

    def _waiting(self, reason: str, message: str, restarts: int = 0, last: dict | None = None) -> dict:
        st = {"ready": False, "restartCount": restarts, "started": False,
              "state": {"waiting": {"reason": reason, **({"message": message} if message else {})}}}
        if last:
            st["lastState"] = {"terminated": last}
        return st

    def _imagepull(self) -> None:
        image = self.containers[0].get("image", "")
        pull_err = (f'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": '
                    f"failed to resolve reference: not found (simulated)")
        back = f'Back-off pulling image "{image}"'
        reason = "ErrImagePull"
        while not self.done() and self.mode() == "imagepull":
            self._patch_status("Pending", False, self._waiting(reason, pull_err if reason == "ErrImagePull" else back))
            self._wait(self.k.crash_backoff)
            reason = "ImagePullBackOff" if reason == "ErrImagePull" else "ErrImagePull"

    def _crashloop(self) -> None:
        restarts = 0
        self._patch_status("Pending", False, self._waiting("ContainerCreating", ""))
        while not self.done():
            restarts += 1
            t = _now()
            last = {"exitCode": 1, "reason": "Error", "startedAt": t, "finishedAt": t,
                    "message": "simulated crash (vllm-autoscaler.test/simulate=crashloop): "
                               "RuntimeError: CUDA error: no CUDA-capable device is detected"}
            backoff = min(self.k.crash_backoff * 2 ** (restarts - 1), self.k.crash_backoff_max)
            msg = f"back-off {backoff:g}s restarting failed container={self.containers[0].get('name')} " \
                  f"pod={self.name}_{self.ns}({self.uid})"
            self._patch_status("Running", False, self._waiting("CrashLoopBackOff", msg, restarts, last))
            self._wait(backoff)

    def _start_sim(self) -> None:
        args = [str(self.k.sim_binary), "--host", self.addr, "--port", str(self.port), *self.sim_args]
        self.log_path = self.k.log_dir / f"{self.name}.log"
        with open(self.log_path, "ab") as log:
            log.write(f"--- {_now()} {' '.join(args)}\n".encode())
            log.flush()
            self.log_offset = log.tell()
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.k._procs[self.proc.pid] = self.proc
        self.k._log(f"{self.name}: started vllm-sim pid {self.proc.pid}: {' '.join(args[1:])}")

    def _probe(self) -> bool:
        try:
            conn = http.client.HTTPConnection(self.addr, self.port, timeout=1)
            try:
                conn.request("GET", self.health_path, headers={"User-Agent": "kube-probe/1.20"})
                return conn.getresponse().status == 200
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def _log_tail(self, n: int = 5) -> str:
        """The last lines this run of the sim wrote (like terminationMessagePolicy
        FallbackToLogsOnError)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                lines = f.read().decode(errors="replace").splitlines()
        except (OSError, TypeError):
            return ""
        return "\n".join(lines[-n:])[-4096:]

    def _run_sim(self) -> None:
        restarts = 0
        last: dict | None = None
        self._patch_status("Pending", False, self._waiting("ContainerCreating", "", restarts, last))
        while not self.done():
            self._start_sim()
            started = _now()
            ready = False
            running = {"restartCount": restarts, "started": True, "state": {"running": {"startedAt": started}}}
            if last:
                running["lastState"] = {"terminated": last}
            self._patch_status("Running", False, {**running, "ready": False})
            while not self.done() and self.proc.poll() is None:
                ok = self._probe()
                if ok != ready and self.proc.poll() is None:
                    ready = ok
                    self.k._log(f"{self.name}: {'Ready' if ready else 'not ready'}")
                    if not ready:
                        self.ready = False  # out of the service before the status says so
                    self._patch_status("Running", ready, {**running, "ready": ready})
                    self.ready = ready  # into the service once the status says Ready
                self._wait(self.k.probe_period if ready else 0.1)
            self.ready = False
            if self.done():
                return
            code = self.proc.wait()
            self.k._procs.pop(self.proc.pid, None)
            restarts += 1
            last = {"exitCode": code if code >= 0 else 128 - code, "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started, "finishedAt": _now(), "message": self._log_tail()}
            if code < 0:
                last["signal"] = -code
            backoff = min(self.k.crash_backoff * 2 ** (restarts - 1), self.k.crash_backoff_max)
            self.k._log(f"{self.name}: vllm-sim exited {code}; restart {restarts} in {backoff:g}s")
            msg = f"back-off {backoff:g}s restarting failed container={self.containers[0].get('name')} " \
                  f"pod={self.name}_{self.ns}({self.uid})"
            self._patch_status("Running", False, self._waiting("CrashLoopBackOff", msg, restarts, last))
            if self._wait(backoff) and self.done():
                return

    def _teardown(self) -> None:
        self.ready = False
        if self.proc is not None:
            grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
            grace = 5 if self.stopping or grace is None else max(int(grace), 0)
            self.k._stop_proc(self.proc, grace)
            self.k._log(f"{self.name}: vllm-sim pid {self.proc.pid} stopped ({self.proc.returncode})")
        if self.deleting and not self.gone and not self.stopping:
            path = f"/api/v1/namespaces/{self.ns}/pods/{self.name}"
            body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                    "preconditions": {"uid": self.uid}}
            try:
                self.k._retry(lambda: self.k.api.request("DELETE", path, body), f"delete {self.name}",
                              give_up=lambda: self.gone or self.k._stopping)
                self.k._log(f"{self.name}: deleted")
            except ApiError as e:
                if e.code not in (404, 409):
                    self.k._log(f"{self.name}: final delete failed: {e}")
        if self.addr:
            self.k._release(self.addr)


class ServiceProxy:
    """What kube-proxy does for a ClusterIP Service, in user space on 127.0.0.1:<ephemeral port>.

    Each accepted connection goes to the next of `endpoints()` (round-robin over the sorted list of
    (address, port), asked anew for every connection) and is relayed byte for byte in both
    directions by two threads, without timeouts (SSE streams last as long as they last) and with
    TCP_NODELAY (a token is passed on when it arrives). An EOF from one side is passed on as
    shutdown(SHUT_WR) to the other (half-close), and the other direction goes on; an error on either
    side (a reset) resets both (SO_LINGER 0). Both sockets are closed once both directions are done.
    With no endpoint, or when the endpoint refuses the connection, the accepted connection is reset
    at once: the nearest a user-space proxy gets to the REJECT of a Service without endpoints.
    `close()` closes the listener and every relayed connection."""

    def __init__(self, endpoints, host: str = "127.0.0.1", backlog: int = 1024):
        self._endpoints = endpoints
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self._sock.listen(backlog)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._lock = threading.Lock()
        self._relays: set[_Relay] = set()
        self._next = 0
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="service-proxy", daemon=True)
        self._thread.start()

    def connections(self) -> int:
        """Relayed connections open right now (accepted and not yet closed on both sides)."""
        with self._lock:
            return len(self._relays)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            relays = list(self._relays)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept() (Linux: EINVAL)
        except OSError:
            pass
        self._thread.join(5)
        self._sock.close()
        for r in relays:
            r.close()
        for r in relays:
            r.thread.join(5)

    def _pick(self) -> tuple[str, int] | None:
        eps = sorted(self._endpoints())
        if not eps:
            return None
        with self._lock:
            ep = eps[self._next % len(eps)]
            self._next += 1
        return ep

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            relay = _Relay(self, conn, self._pick())  # picked here: round-robin in accept order
            with self._lock:
                if self._closed:
                    _reset(conn)
                    return
                self._relays.add(relay)
            relay.thread.start()

    def _done(self, relay: "_Relay") -> None:
        with self._lock:
            self._relays.discard(relay)


class _Relay:
    """One relayed connection of a ServiceProxy: its thread connects to `target` (None: no
    endpoint) and copies client -> pod; a second thread copies pod -> client."""

    def __init__(self, proxy: ServiceProxy, client: socket.socket, target: tuple[str, int] | None):
        self.proxy = proxy
        self.client = client
        self.target = target
        self.upstream: socket.socket | None = None
        self.lock = threading.Lock()
        self.ended = False  # reset or closed: pass no half-close on
        self.thread = threading.Thread(target=self._run, name="service-relay", daemon=True)

    def close(self) -> None:
        """Ends both directions (from ServiceProxy.close)."""
        self._end(reset=False)

    def _end(self, reset: bool) -> None:
        """Wakes both threads. A reset sends nothing now (SHUT_RD only wakes the readers) and makes
        the final close() send a RST (SO_LINGER 0), so the other side sees a reset, not an EOF;
        otherwise both sides get a FIN (SHUT_RDWR also wakes a thread blocked in sendall())."""
        with self.lock:
            self.ended = True
            socks = [s for s in (self.client, self.upstream) if s is not None]
        for s in socks:
            try:
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RD if reset else socket.SHUT_RDWR)
            except OSError:
                pass

    def _connect(self) -> socket.socket | None:
        """The connection to the pod; None without an endpoint or when the pod refuses it."""
        if self.target is None:
            return None
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            return None
        try:
            upstream.settimeout(None)
            for s in (self.client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the client is gone already
            _reset(upstream)
            return None
        return upstream

    def _run(self) -> None:
        try:
            upstream = self._connect()
            if upstream is None:
                _reset(self.client)
                return
            with self.lock:
                self.upstream = upstream
                ended = self.ended
            if ended:  # closed while connecting
                self._end(reset=False)
            back = threading.Thread(target=self._pump, args=(upstream, self.client),
                                    name="service-relay-back", daemon=True)
            back.start()
            self._pump(self.client, upstream)
            back.join()
            upstream.close()
            self.client.close()
        finally:
            self.proxy._done(self)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            self._end(reset=True)
            return
        if not self.ended:
            try:
                dst.shutdown(socket.SHUT_WR)  # pass the half-close on
            except OSError:
                self._end(reset=True)


def _reset(sock: socket.socket) -> None:
    """Closes `sock` with a RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Kubelet:
    """See the module docstring. `start()` returns self; `stop()` is idempotent."""

    def __init__(self, env_dir, namespace: str = "default", selector: str = "app=vllm", sim_binary=None,
                 *, first_address: int = 2, probe_period: float = 2.0, crash_backoff: float = 2.0,
                 crash_backoff_max: float = 20.0, log_dir=None, verbose: bool = False,
                 watch_timeout: int = 60, service_proxy: bool = False):
        env = _read_env(env_dir)
        self.api = _Api(env["KUBE_SERVER"], env["KUBE_CA_FILE"], env["KUBE_ADMIN_TOKEN"])
        self.namespace = namespace
        self.selector = selector
        if sim_binary is None:
            sim_binary = pathlib.Path(__file__).resolve().parents[3] / "build" / "debug" / "bin" / "vllm-sim"
        self.sim_binary = pathlib.Path(sim_binary).resolve()
        if not os.access(self.sim_binary, os.X_OK):
            raise FileNotFoundError(f"vllm-sim not executable: {self.sim_binary}")
        if not 2 <= first_address <= 254:
            raise ValueError("first_address must be in 2..254 (127.0.0.x)")
        self.first_address = first_address
        self.probe_period = probe_period
        self.crash_backoff = crash_backoff
        self.crash_backoff_max = crash_backoff_max
        self.watch_timeout = watch_timeout
        self.verbose = verbose
        self.service_proxy = service_proxy
        self._service: ServiceProxy | None = None
        self.log_dir = pathlib.Path(log_dir or tempfile.mkdtemp(prefix="va-kubelet-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_lines: list[str] = []
        self._workers: dict[str, _PodWorker] = {}  # uid -> worker
        self._addrs: dict[str, str] = {}  # address -> pod name
        self._addr_locks: dict[str, int] = {}  # address -> fd holding its flock
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._watch_conn: http.client.HTTPSConnection | None = None
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()  # set after the first list was handled

    # --- public ---
    def start(self) -> "Kubelet":
        if self.service_proxy and self._service is None:
            self._service = ServiceProxy(self._endpoints)
            self._log(f"service proxy on {self._service.url}")
        self._ensure_node()
        self._thread = threading.Thread(target=self._watch_loop, name="kubelet-watch", daemon=True)
        self._thread.start()
        _live.add(self)
        if not self.synced.wait(30):
            self._log("warning: first pod list not done within 30 s")
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._service is not None:
            self._service.close()
        conn = self._watch_conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.request_stop()
        for w in workers:
            w.thread.join(15)
        if self._thread is not None:
            self._thread.join(15)
        for p in list(self._procs.values()):  # anything a worker did not get to
            self._stop_proc(p, 0)
        _live.discard(self)

    def __enter__(self) -> "Kubelet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def address_of(self, pod_name: str) -> str | None:
        with self._lock:
            for addr, name in self._addrs.items():
                if name == pod_name:
                    return addr
        return None

    def pods(self) -> dict[str, dict]:
        """pod name -> {"address", "port", "pid" (None without a running sim), "log"}."""
        with self._lock:
            workers = list(self._workers.values())
        out = {}
        for w in workers:
            pid = w.proc.pid if w.proc is not None and w.proc.poll() is None else None
            out[w.name] = {"address": w.addr, "port": w.port, "pid": pid, "log": w.log_path}
        return out

    def sim_pids(self) -> list[int]:
        return [p.pid for p in list(self._procs.values()) if p.poll() is None]

    @property
    def service_port(self) -> int:
        """The service proxy's port on 127.0.0.1 (needs service_proxy=True and start())."""
        return self._service_proxy().port

    @property
    def service_url(self) -> str:
        """"http://127.0.0.1:PORT" of the service proxy: the upstream of the proxy under test."""
        return self._service_proxy().url

    def service_connections(self) -> int:
        """Connections the service proxy relays right now."""
        return self._service_proxy().connections()

    def endpoints(self) -> list[tuple[str, int]]:
        """(address, port) of every pod that is Ready and not terminating, sorted."""
        return self._endpoints()

    # --- internals ---
    def _service_proxy(self) -> ServiceProxy:
        if self._service is None:
            raise RuntimeError("no service proxy: Kubelet(..., service_proxy=True).start()")
        return self._service

    def _endpoints(self) -> list[tuple[str, int]]:
        with self._lock:
            workers = list(self._workers.values())
        return sorted(ep for ep in (w.endpoint() for w in workers) if ep is not None)

    def _log(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} kubelet: {msg}"
        self.log_lines.append(line)
        if self.verbose:
            print(line, file=sys.stderr, flush=True)

    def _retry(self, fn, what: str, give_up=lambda: False, deadline: float = 30.0):
        """Retries connection errors, 429 and 5xx with backoff for up to `deadline` s."""
        end = time.monotonic() + deadline
        delay = 0.1
        while True:
            try:
                return fn()
            except ApiError as e:
                if e.code != 429 and e.code < 500:
                    raise
                err: Exception = e
            except (OSError, http.client.HTTPException) as e:
                err = e
            if give_up() or time.monotonic() > end:
                raise ApiError(0, str(err), what)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _ensure_node(self) -> None:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME,
                                                           "kubernetes.io/os": "linux"}}}
        try:
            self._retry(lambda: self.api.request("POST", "/api/v1/nodes", node), "create node")
        except ApiError as e:
            if e.code != 409:
                raise
        t = _now()
        res = {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "1"}
        status = {"status": {
            "capacity": res, "allocatable": res,
            "addresses": [{"type": "InternalIP", "address": HOST_IP}, {"type": "Hostname", "address": NODE_NAME}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "test kubelet (vllm-autoscaler)", "lastHeartbeatTime": t,
                            "lastTransitionTime": t}],
            "nodeInfo": {"kubeletVersion": "test", "operatingSystem": "linux", "architecture": "amd64"}}}
        self._retry(lambda: self.api.request("PATCH", f"/api/v1/nodes/{NODE_NAME}/status", status,
                                             "application/merge-patch+json"), "node status")

    def _allocate(self, name: str, port: int, prefer: str | None) -> str:
        """The lowest 127.0.0.x that no pod of this or another test kubelet on this machine holds
        (an flock on ADDRESS_LOCK_DIR/127.0.0.x, held while the pod has the address and released
        by the kernel if this process dies) and on which nothing listens on `port`."""
        ADDRESS_LOCK_DIR.mkdir(parents=True, exist_ok=True)
        with self._lock:
            candidates = [f"127.0.0.{x}" for x in range(self.first_address, 255)]
            if prefer in candidates:
                candidates.remove(prefer)
                candidates.insert(0, prefer)
            for addr in candidates:
                if addr in self._addrs:
                    continue
                fd = os.open(ADDRESS_LOCK_DIR / addr, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                if not _port_free(addr, port):
                    os.close(fd)
                    continue
                self._addrs[addr] = name
                self._addr_locks[addr] = fd
                return addr
        raise RuntimeError(f"no free 127.0.0.x address for port {port}")

    def _release(self, addr: str) -> None:
        with self._lock:
            self._addrs.pop(addr, None)
            fd = self._addr_locks.pop(addr, None)
        if fd is not None:
            os.close(fd)  # drops the flock

    def _stop_proc(self, proc: subprocess.Popen, grace: float) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        self._procs.pop(proc.pid, None)

    def _pods_path(self) -> str:
        q = urllib.parse.urlencode({"labelSelector": self.selector})
        return f"/api/v1/namespaces/{self.namespace}/pods?{q}"

    def _watch_loop(self) -> None:
        rv: str | None = None
        delay = 0.2
        while not self._stopping:
            try:
                if rv is None:
                    rv = self._list()
                    self.synced.set()
                rv = self._watch(rv)
                delay = 0.2
            except _Expired as e:
                self._log(f"watch expired ({e}); re-listing")
                rv = None
            except (OSError, http.client.HTTPException, ApiError, ValueError) as e:
                if self._stopping:
                    break
                self._log(f"watch error: {e!r}; retrying in {delay:g}s")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _list(self) -> str:
        lst = self.api.request("GET", self._pods_path())
        seen = set()
        for pod in lst.get("items") or []:
            seen.add(pod["metadata"]["uid"])
            self._on_event("ADDED", pod)
        with self._lock:
            missing = [w for uid, w in self._workers.items() if uid not in seen]
        for w in missing:
            self._on_event("DELETED", w.pod)
        return lst["metadata"]["resourceVersion"]

    def _watch(self, rv: str) -> str:
        q = urllib.parse.urlencode({"labelSelector": self.selector, "watch": "1", "resourceVersion": rv,
                                    "allowWatchBookmarks": "true", "timeoutSeconds": str(self.watch_timeout)})
        conn = self.api.connect(self.watch_timeout + 30)
        self._watch_conn = conn
        try:
            conn.request("GET", f"/api/v1/namespaces/{self.namespace}/pods?{q}", headers=self.api.headers())
            resp = conn.getresponse()
            if resp.status == 410:
                raise _Expired("HTTP 410")
            if resp.status != 200:
                raise ApiError(resp.status, resp.read().decode(errors="replace"), "watch pods")
            while not self._stopping:
                line = resp.readline()
                if not line:
                    break  # the server ended the watch (timeoutSeconds): resume from rv
                line = line.strip()
                if not line:
                    continue
                ev = json.loads(line)
                typ, obj = ev.get("type"), ev.get("object") or {}
                if typ == "ERROR":
                    if obj.get("code") == 410 or obj.get("reason") in ("Expired", "Gone"):
                        raise _Expired(obj.get("message", "410"))
                    raise ApiError(obj.get("code", 0), obj, "watch event")
                new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                if typ != "BOOKMARK":
                    self._on_event(typ, obj)
                if new_rv:
                    rv = new_rv
            return rv
        finally:
            self._watch_conn = None
            conn.close()

    def _on_event(self, typ: str, pod: dict) -> None:
        if self._stopping:
            return
        md = pod.get("metadata") or {}
        uid = md.get("uid")
        node = (pod.get("spec") or {}).get("nodeName")
        if not uid or (node and node != NODE_NAME):
            return
        with self._lock:
            w = self._workers.get(uid)
        if typ == "DELETED":
            if w is not None:
                w.update(pod)
                w.mark_gone()
                with self._lock:
                    self._workers.pop(uid, None)
                self._log(f"{w.name}: DELETED")
            return
        if w is not None:
            w.update(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        if md.get("deletionTimestamp"):
            # Terminating before we ran it (e.g. left over from an earlier kubelet): finalize.
            w = _PodWorker(self, pod)
            w.deleting = True
        else:
            w = _PodWorker(self, pod)
            self._log(f"{w.name}: new pod (simulate={w.mode() or '-'})")
        with self._lock:
            self._workers[uid] = w
        w.thread.start()


def _port_free(addr: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
        except OSError:
            return False
    return True


_live: set[Kubelet] = set()


@atexit.register
def _stop_leftovers() -> None:
    for k in list(_live):
        for p in list(k._procs.values()):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Test kubelet: runs vllm-sim for pods of a test control plane.")
    ap.add_argument("--env", required=True, help="control-plane.sh DIR (reads DIR/env)")
    ap.add_argument("--namespace", default="default")
    ap.add_argument("--selector", default="app=vllm", help="label selector of the pods to run")
    ap.add_argument("--sim", default=None, help="vllm-sim binary (default build/debug/bin/vllm-sim)")
    ap.add_argument("--first-address", type=int, default=2, help="first x of 127.0.0.x (default 2)")
    ap.add_argument("--probe-period", type=float, default=2.0)
    ap.add_argument("--crash-backoff", type=float, default=2.0)
    ap.add_argument("--log-dir", default=None, help="where vllm-sim logs go (default: a new temp dir)")
    ap.add_argument("--service-proxy", action="store_true",
                    help="also relay 127.0.0.1:<ephemeral port> to the Ready pods (logged)")
    a = ap.parse_args(argv)
    k = Kubelet(a.env, a.namespace, a.selector, a.sim, first_address=a.first_address,
                probe_period=a.probe_period, crash_backoff=a.crash_backoff, log_dir=a.log_dir, verbose=True,
                service_proxy=a.service_proxy)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    k.start()
    k._log(f"running: namespace {a.namespace}, selector {a.selector}, sim logs in {k.log_dir}")
    done.wait()
    k._log("stopping")
    k.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
