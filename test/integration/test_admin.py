"""The admin port: /healthz, /readyz, a /metrics exposition that a strict Prometheus text-format
0.0.4 parser accepts whole, /status per backend, and POST /admin/backends/{name}/wake|sleep."""

import json
import math
import re
import signal
import threading
import time

import pytest

from proxy import backend_yaml, config_yaml
from support import chat, eventually, free_port, http, refused, sse_events

CHAT = chat(2)

# README.md, "Endpoints": every family, its type and its labels (besides a histogram's `le`).
DESIGN_FAMILIES = {
    "vllm_autoscaler_requests_total": ("counter", {"backend", "code"}),
    "vllm_autoscaler_request_duration_seconds": ("histogram", {"backend"}),
    "vllm_autoscaler_in_flight_requests": ("gauge", {"backend"}),
    "vllm_autoscaler_pending_requests": ("gauge", {"backend"}),
    "vllm_autoscaler_backend_state": ("gauge", {"backend", "state"}),
    "vllm_autoscaler_wakes_total": ("counter", {"backend", "result"}),
    "vllm_autoscaler_wake_duration_seconds": ("histogram", {"backend"}),
    "vllm_autoscaler_scale_downs_total": ("counter", {"backend", "reason"}),
    "vllm_autoscaler_rejected_requests_total": ("counter", {"backend", "reason"}),
    "vllm_autoscaler_client_send_timeouts_total": ("counter", {"backend"}),
    "vllm_autoscaler_backend_awake_seconds_total": ("counter", {"backend"}),
    "vllm_autoscaler_setup_problems": ("gauge", {"backend"}),
    "vllm_autoscaler_controller_restarts_total": ("counter", {"backend"}),
}
STATES = {"asleep", "waking", "ready", "stopping", "failed"}


# --- a strict parser for the Prometheus text exposition format 0.0.4 --------------------------

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Inf|NaN)")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class ExpositionError(AssertionError):
    pass


class Family:
    def __init__(self, name):
        self.name, self.help, self.type = name, None, None
        self.samples = []  # (sample name, {label: value}, float value)


def parse_float(text, where):
    if not FLOAT.fullmatch(text):
        raise ExpositionError(f"{where}: bad value {text!r}")
    return float(text.replace("Inf", "inf").replace("NaN", "nan"))


def unescape_help(text, where):
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "\\n":
                raise ExpositionError(f"{where}: bad escape in HELP")
            out.append("\\" if text[i + 1] == "\\" else "\n")
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_labels(text, i, where):
    """Parses `{a="x",b="y"}` starting at text[i] == '{'; returns (labels, index after '}')."""
    labels = {}
    i += 1
    while True:
        if i < len(text) and text[i] == "}":
            return labels, i + 1
        m = LABEL_NAME.match(text, i)
        if not m:
            raise ExpositionError(f"{where}: bad label name at {text[i:]!r}")
        name = m.group()
        if name.startswith("__"):
            raise ExpositionError(f"{where}: reserved label name {name}")
        if name in labels:
            raise ExpositionError(f"{where}: label {name} repeated")
        i = m.end()
        if text[i:i + 2] != '="':
            raise ExpositionError(f"{where}: expected =\" after {name}")
        i += 2
        value = []
        while True:
            if i >= len(text):
                raise ExpositionError(f"{where}: unterminated label value")
            c = text[i]
            if c == "\\":
                nxt = text[i + 1:i + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ExpositionError(f"{where}: bad escape \\{nxt} in label value")
                value.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise ExpositionError(f"{where}: raw newline in label value")
            else:
                value.append(c)
                i += 1
        labels[name] = "".join(value)
        if text[i:i + 1] == ",":
            i += 1
        elif text[i:i + 1] != "}":
            raise ExpositionError(f"{where}: expected , or }} after label {name}")


def family_of(sample_name, families):
    """The declared family a sample belongs to (histogram/summary suffixes included)."""
    if sample_name in families:
        return families[sample_name]
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample_name[: -len(suffix)] if sample_name.endswith(suffix) else None
        if base and base in families and families[base].type in ("histogram", "summary"):
            if suffix == "_bucket" and families[base].type != "histogram":
                continue
            return families[base]
    return None


def parse_exposition(text):
    """Parses a whole text exposition strictly; returns {family name: Family}. Raises
    ExpositionError for anything a Prometheus 0.0.4 text parser rejects or that breaks the format's
    rules (grouping, HELP/TYPE before samples, histogram shape)."""
    if text and not text.endswith("\n"):
        raise ExpositionError("the exposition does not end with a newline")
    families: dict[str, Family] = {}
    finished: set[str] = set()  # families whose group of lines has ended
    current = None
    seen_series = set()

    def enter(fam):
        nonlocal current
        if current is not fam:
            if fam.name in finished:
                raise ExpositionError(f"lines of {fam.name} are not grouped together")
            if current is not None:
                finished.add(current.name)
            current = fam

    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {n} {line!r}"
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not METRIC_NAME.fullmatch(name):
                    raise ExpositionError(f"{where}: bad metric name")
                fam = families.get(name) or families.setdefault(name, Family(name))
                enter(fam)
                if parts[1] == "HELP":
                    if fam.help is not None:
                        raise ExpositionError(f"{where}: second HELP for {name}")
                    fam.help = unescape_help(parts[3] if len(parts) > 3 else "", where)
                else:
                    if fam.type is not None:
                        raise ExpositionError(f"{where}: second TYPE for {name}")
                    if fam.samples:
                        raise ExpositionError(f"{where}: TYPE after samples of {name}")
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ExpositionError(f"{where}: bad TYPE")
                    fam.type = parts[3]
            continue  # any other comment
        m = METRIC_NAME.match(line)
        if not m:
            raise ExpositionError(f"{where}: bad metric name")
        name, i = m.group(), m.end()
        labels = {}
        if line[i:i + 1] == "{":
            labels, i = parse_labels(line, i, where)
        rest = line[i:]
        if not rest.startswith(" ") or rest.startswith("  ") or rest.endswith(" "):
            raise ExpositionError(f"{where}: expected one space, a value and an optional timestamp")
        fields = rest[1:].split(" ")
        if len(fields) > 2:
            raise ExpositionError(f"{where}: trailing garbage")
        value = parse_float(fields[0], where)
        if len(fields) == 2 and not re.fullmatch(r"-?\d+", fields[1]):
            raise ExpositionError(f"{where}: bad timestamp")
        fam = family_of(name, families)
        if fam is None or fam.type is None:
            raise ExpositionError(f"{where}: sample without a declared TYPE")
        enter(fam)
        key = (name, tuple(sorted(labels.items())))
        if key in seen_series:
            raise ExpositionError(f"{where}: duplicate series")
        seen_series.add(key)
        if fam.type == "counter" and (value < 0 or math.isnan(value)):
            raise ExpositionError(f"{where}: negative counter")
        if fam.type == "histogram":
            if name.endswith("_bucket") != ("le" in labels):
                raise ExpositionError(f"{where}: le belongs to _bucket samples only")
            if name == fam.name:
                raise ExpositionError(f"{where}: histogram sample without a suffix")
        elif "le" in labels and fam.type != "histogram":
            raise ExpositionError(f"{where}: le label outside a histogram")
        fam.samples.append((name, labels, value))

    for fam in families.values():
        if fam.type is None:
            raise ExpositionError(f"{fam.name}: HELP without TYPE")
        if fam.type == "histogram":
            check_histogram(fam)
    return families


def check_histogram(fam):
    series = {}
    for name, labels, value in fam.samples:
        base = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        s = series.setdefault(base, {"buckets": [], "sum": None, "count": None})
        if name == fam.name + "_bucket":
            s["buckets"].append((parse_float(labels["le"], f"{fam.name} le"), value))
        elif name == fam.name + "_sum":
            s["sum"] = value
        else:
            s["count"] = value
    for base, s in series.items():
        where = f"{fam.name}{dict(base)}"
        bounds = [b for b, _ in s["buckets"]]
        counts = [c for _, c in s["buckets"]]
        if not bounds or bounds[-1] != math.inf:
            raise ExpositionError(f"{where}: buckets do not end with le=\"+Inf\"")
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ExpositionError(f"{where}: le bounds not strictly increasing")
        if counts != sorted(counts):
            raise ExpositionError(f"{where}: bucket counts not cumulative")
        if s["count"] is None or s["sum"] is None:
            raise ExpositionError(f"{where}: _count or _sum missing")
        if s["count"] != counts[-1]:
            raise ExpositionError(f"{where}: _count {s['count']} != +Inf bucket {counts[-1]}")
        if s["sum"] < 0 and all(b >= 0 for b in bounds[:-1]) and counts[0] == counts[-1] == 0:
            raise ExpositionError(f"{where}: negative _sum of nothing")


def scrape(p):
    status, headers, body = http("GET", p.admin_url + "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_exposition(body.decode())


def sample(families, family, name=None, **labels):
    """The value of the one sample of `family` (sample `name`, default the family) with exactly
    `labels` (a histogram's `le` included when given)."""
    name = name or family
    found = [v for n, l, v in families[family].samples if n == name and l == labels]
    assert len(found) == 1, (name, labels, families[family].samples)
    return found[0]


# --- the proxy under test --------------------------------------------------------------------


def config(port, delay="500ms", itl="1ms", idle="60s", other_port=None):
    """The backend `sim`, and with `other_port` a second one, `other`, with the default timeouts."""
    backends = [backend_yaml("sim", port, ["sim-model"], "--startup-delay", delay, "--itl", itl,
                             idle=idle)]
    if other_port is not None:
        backends.append(backend_yaml("other", other_port, ["other-model"], idle=None, wake=None,
                                     stop_timeout=None))
    return config_yaml(*backends, top="limits: { shutdown_timeout: 20s }")


def started(p):
    return len(p.started_pids())


def in_background(fn, *args):
    result = {}

    def run():
        try:
            result["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised by the caller
            result["error"] = e

    t = threading.Thread(target=run)
    t.start()

    def join(timeout=60):
        t.join(timeout)
        assert not t.is_alive()
        if "error" in result:
            raise result["error"]
        return result["value"]

    return join


# --- tests -----------------------------------------------------------------------------------


def test_healthz_and_readyz_are_200_while_running_even_with_the_backend_asleep(proxy):
    p = proxy(config(free_port()))
    for _ in range(3):
        assert http("GET", p.admin_url + "/healthz")[::2] == (200, b"ok\n")
        assert http("GET", p.admin_url + "/readyz")[::2] == (200, b"ready\n")
    assert p.backend()["state"] == "asleep" and started(p) == 0
    status, _, body = http("GET", p.admin_url + "/nope")
    assert status == 404 and json.loads(body)["error"]["code"] == 404


def test_readyz_turns_503_while_draining_on_sigterm(proxy):
    port = free_port()
    p = proxy(config(port, delay="100ms", itl="50ms"))
    join = in_background(sse_events, p.url + "/v1/chat/completions",
                         {**CHAT, "max_tokens": 40, "stream": True})
    eventually(lambda: p.backend()["in_flight"] == 1)
    p.popen.send_signal(signal.SIGTERM)
    p.wait_for_output('"msg":"shutting down"')
    status, headers, body = http("GET", p.admin_url + "/readyz")
    assert status == 503 and "retry-after" in headers
    assert json.loads(body)["error"]["code"] == 503
    assert http("GET", p.admin_url + "/healthz")[0] == 200
    events = join()
    assert events[-1][1] == "[DONE]" and len(events) == 1 + 40 + 1
    assert p.wait(timeout=20) == 0


def test_metrics_exposition_is_strictly_valid_and_has_every_design_family(proxy):
    port = free_port()
    p = proxy(config(port, other_port=free_port()))
    # Before any traffic the exposition is already complete and valid.
    families = scrape(p)
    for name, (kind, _) in DESIGN_FAMILIES.items():
        assert name in families and families[name].type == kind, name
        assert families[name].help, name

    # Some traffic: a wake, answers, a stream, rejections of several kinds.
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    assert sse_events(p.url + "/v1/chat/completions", {**CHAT, "stream": True})[-1][1] == "[DONE]"
    for _ in range(3):
        completion = {"model": "sim-model", "prompt": "x"}
        assert http("POST", p.url + "/v1/completions", completion)[0] == 200
    assert http("POST", p.url + "/v1/chat/completions", {**CHAT, "model": "nope"})[0] == 404
    assert http("POST", p.url + "/v1/chat/completions", "{oops",
                {"Content-Type": "application/json"})[0] == 400
    assert http("POST", p.url + "/v1/embeddings", {"model": "sim-model", "input": "x"})[0] == 404
    # The last answer is accounted once its last byte is written, which the client can see first.
    eventually(lambda: p.backend("sim")["in_flight"] == 0)

    families = scrape(p)
    for name, (kind, labels) in DESIGN_FAMILIES.items():
        fam = families[name]
        assert fam.type == kind
        assert fam.samples, f"{name} has no samples"
        for sample_name, sample_labels, _ in fam.samples:
            assert set(sample_labels) - {"le"} == labels, (sample_name, sample_labels)
        # Per-backend families have series for every backend from the start or once used.
        backends = {l["backend"] for _, l, _ in fam.samples}
        assert ("none" if "rejected" in name else "sim") in backends, (name, backends)

    # The values follow the traffic.
    req = "vllm_autoscaler_requests_total"
    assert sample(families, req, backend="sim", code="200") == 5
    assert sample(families, req, backend="sim", code="404") == 1  # the sim's own 404
    hist = "vllm_autoscaler_request_duration_seconds"
    assert sample(families, hist, hist + "_count", backend="sim") == 6
    assert sample(families, hist, hist + "_bucket", backend="sim", le="+Inf") == 6
    assert sample(families, hist, hist + "_sum", backend="sim") > 0.4  # the first one waited
    wake = "vllm_autoscaler_wake_duration_seconds"
    assert sample(families, wake, wake + "_count", backend="sim") == 1
    assert not [v for n, l, v in families[wake].samples if l["backend"] == "other" and v != 0]
    assert 0.4 < sample(families, wake, wake + "_sum", backend="sim") < 30
    assert sample(families, "vllm_autoscaler_wakes_total", backend="sim", result="success") == 1
    assert sample(families, "vllm_autoscaler_wakes_total", backend="other", result="success") == 0
    for backend, state in (("sim", "ready"), ("other", "asleep")):
        for s in STATES:
            assert sample(families, "vllm_autoscaler_backend_state", backend=backend,
                          state=s) == (1 if s == state else 0)
    rejected = "vllm_autoscaler_rejected_requests_total"
    assert sample(families, rejected, backend="none", reason="unknown_model") == 1
    assert sample(families, rejected, backend="none", reason="bad_request") == 1
    assert sample(families, "vllm_autoscaler_in_flight_requests", backend="sim") == 0
    assert sample(families, "vllm_autoscaler_pending_requests", backend="sim") == 0
    awake = "vllm_autoscaler_backend_awake_seconds_total"
    assert sample(families, awake, backend="other") == 0
    first = sample(families, awake, backend="sim")
    time.sleep(0.3)
    assert sample(scrape(p), awake, backend="sim") >= first + 0.25  # GPU time keeps counting


def test_status_reports_every_field_through_a_backends_life(proxy):
    port = free_port()
    p = proxy(config(port, delay="1s", itl="30ms", idle="60s"))
    status, _, body = http("GET", p.admin_url + "/status")
    doc = json.loads(body)
    assert status == 200 and doc["ready"] is True and isinstance(doc["version"], str)
    [b] = doc["backends"]
    assert set(b) >= {"name", "state", "replicas", "desired_replicas", "in_flight", "pending",
                      "idle_seconds",
                      "seconds_until_scale_down", "last_wake_seconds", "wakes", "last_error"}
    assert (b["name"], b["state"], b["replicas"], b["in_flight"], b["pending"], b["wakes"]) == \
        ("sim", "asleep", 0, 0, 0, 0)
    assert b["seconds_until_scale_down"] is None and b["last_wake_seconds"] is None
    assert b["last_error"] is None and b["idle_seconds"] >= 0

    # A held request: waking, one pending, nothing in flight yet.
    join = in_background(http, "POST", p.url + "/v1/chat/completions", CHAT)
    b = eventually(lambda: (s := p.backend())["pending"] == 1 and s)
    assert (b["state"], b["in_flight"], b["wakes"]) == ("waking", 0, 1)
    # As the scaler sees them: the process may have started, not yet answered its health probe.
    assert b["replicas"] in (0, 1) and b["desired_replicas"] in (0, 1)
    assert b["seconds_until_scale_down"] is None
    assert join()[0] == 200

    b = p.backend()
    assert (b["state"], b["replicas"], b["in_flight"], b["pending"], b["wakes"]) == \
        ("ready", 1, 0, 0, 1)
    assert 0.9 <= b["last_wake_seconds"] < 30
    assert 0 <= b["idle_seconds"] < 30
    assert abs(b["seconds_until_scale_down"] + b["idle_seconds"] - 60) < 1

    # A stream in flight: not idle, no countdown.
    join = in_background(sse_events, p.url + "/v1/chat/completions",
                         {**CHAT, "max_tokens": 30, "stream": True})
    b = eventually(lambda: (s := p.backend())["in_flight"] == 1 and s)
    assert (b["state"], b["pending"], b["idle_seconds"], b["seconds_until_scale_down"]) == \
        ("ready", 0, 0, None)
    assert join()[-1][1] == "[DONE]"
    eventually(lambda: p.backend()["in_flight"] == 0)
    time.sleep(0.3)
    b = p.backend()
    assert b["in_flight"] == 0 and 0.25 <= b["idle_seconds"] < 30
    assert 30 < b["seconds_until_scale_down"] <= 59.75
    # Status scrapes are not activity.
    assert p.backend()["idle_seconds"] >= b["idle_seconds"]


def test_admin_wake_brings_the_backend_up_without_a_request_and_sleep_stops_it(proxy):
    port = free_port()
    p = proxy(config(port, delay="300ms"))
    status, _, body = http("POST", p.admin_url + "/admin/backends/sim/wake")
    assert status == 202 and json.loads(body)["state"] == "waking"
    t = p.wait_state("ready")
    assert started(p) == 1 and not refused(port)
    b = p.backend()
    assert (b["wakes"], b["replicas"], b["in_flight"]) == (1, 1, 0)
    families = scrape(p)
    assert sample(families, "vllm_autoscaler_wakes_total", backend="sim", result="success") == 1
    assert not any(n == "vllm_autoscaler_requests_total" for n, _, _ in
                   families["vllm_autoscaler_requests_total"].samples)
    # Waking a ready backend again is a no-op.
    assert http("POST", p.admin_url + "/admin/backends/sim/wake")[0] == 202
    assert p.backend()["wakes"] == 1 and started(p) == 1
    assert time.monotonic() - t < 5

    status, _, body = http("POST", p.admin_url + "/admin/backends/sim/sleep")
    assert status == 202 and json.loads(body)["state"] in ("stopping", "asleep")
    p.wait_state("asleep")
    eventually(lambda: p.events("backend process exited"))
    assert refused(port)
    families = scrape(p)
    assert sample(families, "vllm_autoscaler_scale_downs_total", backend="sim", reason="admin") == 1
    assert sample(families, "vllm_autoscaler_backend_state", backend="sim", state="asleep") == 1
    # Sleeping an asleep backend is fine, and a request wakes it as usual afterwards.
    assert http("POST", p.admin_url + "/admin/backends/sim/sleep")[0] == 202
    assert http("POST", p.url + "/v1/chat/completions", CHAT)[0] == 200
    assert started(p) == 2 and p.backend()["wakes"] == 2


def test_admin_sleep_is_409_while_a_stream_is_in_flight(proxy):
    p = proxy(config(free_port(), delay="100ms", itl="30ms"))
    join = in_background(sse_events, p.url + "/v1/chat/completions",
                         {**CHAT, "max_tokens": 40, "stream": True})
    eventually(lambda: p.backend()["in_flight"] == 1)
    for _ in range(3):
        status, _, body = http("POST", p.admin_url + "/admin/backends/sim/sleep")
        assert status == 409, body
        err = json.loads(body)["error"]
        assert err["code"] == 409 and "in flight" in err["message"]
        assert p.backend()["state"] == "ready"
    events = join()
    assert events[-1][1] == "[DONE]" and len(events) == 1 + 40 + 1
    assert p.events("backend process exited") == []
    # Once it is over (the proxy has written the last chunk), sleep goes through.
    eventually(lambda: p.backend()["in_flight"] == 0)
    assert http("POST", p.admin_url + "/admin/backends/sim/sleep")[0] == 202
    p.wait_state("asleep")


@pytest.mark.parametrize("action", ["wake", "sleep"])
def test_admin_calls_for_an_unknown_backend_are_404(proxy, action):
    p = proxy(config(free_port()))
    status, _, body = http("POST", p.admin_url + f"/admin/backends/nope/{action}")
    assert status == 404
    err = json.loads(body)["error"]
    assert err["code"] == 404 and "nope" in err["message"]
    # The right backend with the wrong method or action is not an action either.
    assert http("GET", p.admin_url + f"/admin/backends/sim/{action}")[0] == 405
    assert http("POST", p.admin_url + "/admin/backends/sim/restart")[0] == 405
    assert p.backend()["state"] == "asleep" and started(p) == 0
