"""Summaries and Markdown for bench/run: medians and spreads over the rounds, the ratio to nginx,
the targets of issue 4, one table per scenario and the README's headline table."""

from __future__ import annotations

import statistics

from candidates import CANDIDATES, LABELS, PROXIES

# Targets for vllm-autoscaler with one I/O thread (issue 4).
SSE_P99_LIMIT_US = 100
WAKE_SHARE_LIMIT_MS = 20
IDLE_RSS_LIMIT_MIB = 16
HELD_RSS_LIMIT_MIB = 64

HELD_WAKING = "vllm-autoscaler (held, backend waking)"


def pct(values: list[float], p: float) -> float | None:
    """The p-th percentile of `values`, linearly interpolated between closest ranks."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def stat(values) -> dict | None:
    """Median, min and max of the non-None `values` (one per round)."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def _med(s: dict | None) -> float | None:
    return None if s is None else s["median"]


# ---------------------------------------------------------------------------------------------
# Summaries (stored in the JSON next to the raw rounds)


def summarise(scenarios: dict) -> dict:
    out = {}
    if "overhead" in scenarios:
        out["overhead"] = _sum_overhead(scenarios["overhead"])
    if "streaming" in scenarios:
        out["streaming"] = _sum_streaming(scenarios["streaming"])
    if "cold_start" in scenarios:
        out["cold_start"] = _sum_cold_start(scenarios["cold_start"])
    if "memory" in scenarios:
        out["memory"] = _sum_memory(scenarios["memory"])
    if "growth" in scenarios:
        out["growth"] = _sum_growth(scenarios["growth"])
    return out


def _sum_overhead(s: dict) -> dict:
    out = {}
    for conns, by_cand in s["runs"].items():
        direct = by_cand.get("direct", [])
        row = {}
        for cand, rounds in by_cand.items():
            r = {k: stat([x[k] for x in rounds]) for k in ("rps", "p50_us", "p90_us", "p99_us")}
            r["cpu_us_per_request"] = stat([x.get("cpu_us_per_request") for x in rounds])
            r["rss_mib_max"] = stat([x.get("rss_mib_max") for x in rounds])
            r["errors"] = sum(x["errors"] for x in rounds)
            if cand != "direct" and direct:
                for p in ("p50", "p90", "p99"):
                    r[f"added_{p}_us"] = stat([x[f"{p}_us"] - d[f"{p}_us"]
                                               for x, d in zip(rounds, direct)])
            row[cand] = r
        out[conns] = row
    return out


def _sum_streaming(s: dict) -> dict:
    out = {}
    direct = s["runs"].get("direct", [])
    for cand, rounds in s["runs"].items():
        r = {
            "ttfb_us": stat([x["ttfb_us"] for x in rounds]),
            "event_p50_us": stat([x["p50_us"] for x in rounds]),
            "event_p99_us": stat([x["p99_us"] for x in rounds]),
            "events_per_stream": min(x["events"] for x in rounds),
        }
        pooled = [v for x in rounds for v in x["latencies_us"]]
        r["pooled_p50_us"] = pct(pooled, 50)
        r["pooled_p99_us"] = pct(pooled, 99)
        if cand != "direct" and direct:
            r["added_ttfb_us"] = stat([x["ttfb_us"] - d["ttfb_us"] for x, d in zip(rounds, direct)])
            r["added_p50_us"] = stat([x["p50_us"] - d["p50_us"] for x, d in zip(rounds, direct)])
            r["added_p99_us"] = stat([x["p99_us"] - d["p99_us"] for x, d in zip(rounds, direct)])
        out[cand] = r
    return out


def _sum_cold_start(s: dict) -> dict:
    out = {}
    for n, rounds in s["runs"].items():
        out[n] = {
            "answered_200": min(x["answered_200"] for x in rounds),
            "wake_s": stat([x["wake_s"] for x in rounds]),
            "first_byte_ms": stat([x["proxy_share_first_byte_ms"] for x in rounds]),
            "last_first_byte_ms": stat([x["proxy_share_last_first_byte_ms"] for x in rounds]),
            "direct_first_byte_ms": stat([x["direct_first_byte_ms"] for x in rounds]),
            "direct_last_first_byte_ms": stat([x["direct_last_first_byte_ms"] for x in rounds]),
        }
    return out


def _sum_memory(s: dict) -> dict:
    def rss(rounds, key="VmRSS"):
        return stat([x["memory"][key] if x.get("memory") else None for x in rounds])

    return {
        "idle": {c: rss(r) for c, r in s["idle"].items()},
        "idle_anon": {c: rss(r, "RssAnon") for c, r in s["idle"].items()},
        "held": {c: rss(r) for c, r in s["held"].items()},
        "held_reached": {c: min(x["reached"] for x in r) for c, r in s["held"].items()},
        "under_load": {c: stat(r) for c, r in s.get("under_load", {}).items()},
        "peak": dict(s.get("peak", {})),
    }


def _sum_growth(s: dict) -> dict:
    out = {}
    for n, by_cand in s["runs"].items():
        out[n] = {}
        for cand, rounds in by_cand.items():
            out[n][cand] = {
                "p50_us": stat([x["wrk"]["p50_us"] for x in rounds]),
                "p99_us": stat([x["wrk"]["p99_us"] for x in rounds]),
                "rps": stat([x["wrk"]["rps"] for x in rounds]),
                "rss_mib": stat([x["memory"]["VmRSS"] if x["memory"] else None for x in rounds]),
                "still_open": min(x["still_open"] for x in rounds),
                "errors": sum(x["wrk"]["errors"] for x in rounds),
            }
    return out


# ---------------------------------------------------------------------------------------------
# Targets


def _conns(n) -> str:
    return f"{n} connection" + ("" if str(n) == "1" else "s")


def targets(summary: dict) -> list[dict]:
    """Each target of issue 4 that this run measured: what, measured, limit, met."""
    out = []
    ours = "vllm-autoscaler"

    def add(what, value, limit, met, unit=""):
        out.append({"target": what, "measured": value, "limit": limit, "met": bool(met),
                    "unit": unit})

    for conns, row in summary.get("overhead", {}).items():
        o, n = row.get(ours), row.get("nginx")
        if not o or not n:
            continue
        for p in ("p50", "p99"):
            a, b = _med(o.get(f"added_{p}_us")), _med(n.get(f"added_{p}_us"))
            if a is not None and b is not None:
                add(f"added {p} latency, {_conns(conns)} ≤ nginx's", round(a, 1),
                    round(b, 1), a <= b, "µs")
        a, b = _med(o["rps"]), _med(n["rps"])
        add(f"throughput, {_conns(conns)} ≥ nginx's", round(a), round(b), a >= b, "req/s")
    st = summary.get("streaming", {}).get(ours)
    if st and st.get("added_p99_us"):
        v = _med(st["added_p99_us"])
        add("SSE per-event added latency p99 < 100 µs", round(v, 1), SSE_P99_LIMIT_US,
            v < SSE_P99_LIMIT_US, "µs")
    for n, row in summary.get("cold_start", {}).items():
        v = _med(row["first_byte_ms"])
        add(f"proxy's share of a wake ({n} held): ready → first byte < 20 ms", v,
            WAKE_SHARE_LIMIT_MS, v < WAKE_SHARE_LIMIT_MS, "ms")
    mem = summary.get("memory", {})
    if mem.get("idle", {}).get(ours):
        v = _med(mem["idle"][ours])
        add("idle RSS < 16 MiB", v, IDLE_RSS_LIMIT_MIB, v < IDLE_RSS_LIMIT_MIB, "MiB")
    if mem.get("held", {}).get(HELD_WAKING):
        v = _med(mem["held"][HELD_WAKING])
        add("RSS with the held requests < 64 MiB", v, HELD_RSS_LIMIT_MIB,
            v < HELD_RSS_LIMIT_MIB, "MiB")
    return out


# ---------------------------------------------------------------------------------------------
# Markdown


def _num(v, digits=0) -> str:
    if v is None:
        return "—"
    if digits == 0:
        return f"{round(v):,}".replace(",", " ")
    return f"{v:.{digits}f}"


def cell(s: dict | None, digits=0) -> str:
    """`median (min–max)`; just the value when every round gave the same or there was one."""
    if s is None:
        return "—"
    if s["n"] == 1 or _num(s["min"], digits) == _num(s["max"], digits):
        return _num(s["median"], digits)
    return f"{_num(s['median'], digits)} ({_num(s['min'], digits)}–{_num(s['max'], digits)})"


def ratio(a: dict | float | None, b: dict | float | None) -> str:
    """a / b (medians) as `1.23×`; "—" when either is missing or b is not positive."""
    a = _med(a) if isinstance(a, dict) else a
    b = _med(b) if isinstance(b, dict) else b
    if a is None or b is None or b <= 0:
        return "—"
    r = a / b
    return f"{r:.2f}×" if abs(r) >= 0.1 else f"{r:.3f}×"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render(results: dict) -> str:
    meta, summary = results["meta"], results["summary"]
    p = results["params"]
    out = [f"# vllm-autoscaler vs nginx vs HAProxy ({meta['profile']} run)\n"]
    out.append(f"Command: `{meta['command']}`  \n"
               f"Started {meta['started']}, took {meta['duration_s']:.0f} s.  \n"
               f"Machine: {meta['machine']['cpu_model']}, {meta['machine']['cores']} cores, "
               f"{meta['machine']['mem_total_gib']} GiB; kernel {meta['machine']['kernel']}; "
               f"load average {meta['machine']['loadavg_start']} at the start, "
               f"{meta['machine']['loadavg_end']} at the end.  \n"
               f"Versions: {'; '.join(f'{k} `{v}`' for k, v in meta['versions'].items())}.  \n"
               f"CPUs: {meta['layout']}  \n"
               "Cells are `median (min–max)` over the rounds; candidates ran interleaved, round by "
               "round. \"Added\" = through the candidate minus direct to the backend, in the same "
               "round. `× nginx` = the candidate's median over nginx's.\n")
    if meta.get("notes"):
        out.append("Notes: " + " ".join(meta["notes"]) + "\n")

    t = results.get("targets", [])
    if t:
        out.append("## Targets (vllm-autoscaler, one I/O thread)\n")
        out.append(_table(["target", "measured", "limit / nginx", "met"],
                          [[x["target"], f"{_fmt_target(x['measured'])} {x['unit']}",
                            f"{_fmt_target(x['limit'])} {x['unit']}",
                            "yes" if x["met"] else "**no**"] for x in t]))

    if "overhead" in summary:
        out.append(f"## 1. Steady-state overhead\n\nwrk -t1, {p['s1_duration']} s per run, "
                   f"{p['s1_rounds']} round(s); POST /v1/chat/completions ({len_body(results)} "
                   "bytes) answered by nginx with a fixed ~400-byte JSON. Latencies in µs. "
                   "CPU/req: the proxy's user+system CPU time per request.\n")
        rows = []
        for conns, row in summary["overhead"].items():
            n = row.get("nginx", {})
            for cand in CANDIDATES:
                r = row.get(cand)
                if not r:
                    continue
                rows.append([conns, LABELS[cand], cell(r["rps"]), ratio(r["rps"], n.get("rps")),
                             cell(r["p50_us"]), cell(r["p90_us"]), cell(r["p99_us"]),
                             cell(r.get("added_p50_us")), cell(r.get("added_p99_us")),
                             ratio(r.get("added_p99_us"), n.get("added_p99_us")),
                             cell(r["cpu_us_per_request"], 1), str(r["errors"])])
        out.append(_table(["conns", "candidate", "req/s", "× nginx", "p50", "p90", "p99",
                           "added p50", "added p99", "added p99 × nginx", "CPU µs/req",
                           "errors"], rows))

    if "streaming" in summary:
        out.append(f"## 2. Streaming (SSE)\n\nOne stream per candidate per round, "
                   f"{p['s2_rounds']} round(s): vllm-sim --event-timestamps, "
                   f"{p['s2_events']} tokens, --itl {p['s2_itl']}. Per event: arrival at the "
                   "client minus the send time the sim wrote into it (µs); TTFB: request written → "
                   "first byte of the answer (µs). Per-round p50/p99, then the median over rounds.\n")
        rows = []
        st = summary["streaming"]
        n = st.get("nginx", {})
        for cand in CANDIDATES:
            r = st.get(cand)
            if not r:
                continue
            rows.append([LABELS[cand], str(r["events_per_stream"]), cell(r["ttfb_us"]),
                         cell(r.get("added_ttfb_us")), cell(r["event_p50_us"]),
                         cell(r["event_p99_us"]), cell(r.get("added_p50_us"), 1),
                         cell(r.get("added_p99_us"), 1),
                         ratio(r.get("added_p99_us"), n.get("added_p99_us"))])
        out.append(_table(["candidate", "events/stream", "TTFB", "added TTFB", "event p50",
                           "event p99", "added p50", "added p99", "added p99 × nginx"], rows))

    if "cold_start" in summary:
        out.append(f"## 3. Cold start (vllm-autoscaler only)\n\nbench/cold_start.py's run(): "
                   f"N requests held while vllm-sim starts (--startup-delay {p['s3_delay']}), "
                   f"{p['s3_rounds']} round(s). The proxy's share: from its `to=ready` transition "
                   "(right after the first successful health answer) to the first byte at the "
                   "first client and at the last. Beside it, the same N requests sent at once "
                   "straight to the ready backend. nginx and HAProxy cannot hold a request while "
                   "a backend starts, so there is no ratio.\n")
        rows = [[n, str(r["answered_200"]), cell(r["wake_s"], 2), cell(r["first_byte_ms"], 1),
                 cell(r["last_first_byte_ms"], 1), cell(r["direct_first_byte_ms"], 1),
                 cell(r["direct_last_first_byte_ms"], 1)]
                for n, r in summary["cold_start"].items()]
        out.append(_table(["held", "answered 200", "wake s", "ready → first byte ms",
                           "ready → last first byte ms", "direct: first byte ms",
                           "direct: last first byte ms"], rows))

    if "memory" in summary:
        m = summary["memory"]
        held_n = p["s4_held"]
        out.append(f"## 4. Memory\n\nVmRSS in MiB from /proc/PID/status, summed over the "
                   "candidate's processes (nginx: master + worker, so its shared libraries count "
                   "twice; Pss is in the JSON). Idle: a fresh instance after "
                   f"{p['s4_idle_wait']} s. {held_n} requests with 4 KiB bodies: "
                   "vllm-autoscaler holding them while its backend wakes (a process scaler whose "
                   "vllm-sim has --startup-delay 1h), and every proxy with them in flight to a "
                   "backend that does not answer (vllm-sim --ttft 600s). Under load: the highest "
                   "sample (every 100 ms) during " + results["scenarios"]["memory"].get(
                       "under_load_source", "") + ". Peak: VmHWM, the most any instance "
                   "reached in this run. Each server is sized for the connections of the "
                   "scenario (nginx worker_connections, HAProxy maxconn; see bench/README.md).\n")
        rows = []
        nginx_idle = m["idle"].get("nginx")
        for cand in PROXIES:
            held_cells = cell(m["held"].get(cand), 1)
            rows.append([LABELS[cand], cell(m["idle"].get(cand), 1),
                         ratio(m["idle"].get(cand), nginx_idle),
                         cell(m["idle_anon"].get(cand), 2),
                         cell(m["held"].get(HELD_WAKING), 1) if cand == "vllm-autoscaler" else "—",
                         held_cells, ratio(m["held"].get(cand), m["held"].get("nginx")),
                         cell(m["under_load"].get(cand), 1),
                         ratio(m["under_load"].get(cand), m["under_load"].get("nginx")),
                         _num(m["peak"].get(cand), 1)])
        out.append(_table(["candidate", "idle", "× nginx", "idle RssAnon",
                           f"{held_n} held (waking)", f"{held_n} in flight", "× nginx",
                           "256-conn load", "× nginx", "peak VmHWM"], rows))

    if "growth" in summary:
        out.append(f"## 5. Growth with open keep-alive connections\n\nN connections opened "
                   "one by one, each carrying one request, then left idle; then wrk -t1 "
                   f"-c{p['s5_load_conns']} for {p['s5_duration']} s beside them "
                   f"({p['s5_rounds']} round(s)). Latency in µs, VmRSS (MiB) with the N "
                   "connections open, before the wrk run. \"open\": how many of the N were still "
                   "open after it.\n")
        rows = []
        for n, row in summary["growth"].items():
            ng = row.get("nginx", {})
            for cand in CANDIDATES:
                r = row.get(cand)
                if not r:
                    continue
                rows.append([n, LABELS[cand], cell(r["p50_us"]), cell(r["p99_us"]),
                             ratio(r["p99_us"], ng.get("p99_us")), cell(r["rps"]),
                             cell(r["rss_mib"], 1) if cand != "direct" else "—",
                             ratio(r["rss_mib"], ng.get("rss_mib")) if cand != "direct" else "—",
                             str(r["still_open"]), str(r["errors"])])
        out.append(_table(["open conns", "candidate", "p50", "p99", "p99 × nginx", "req/s",
                           "VmRSS", "VmRSS × nginx", "open", "errors"], rows))
        per = per_connection_kib(summary["growth"])
        if per:
            out.append("Memory per idle connection (VmRSS growth from the fewest to the most "
                       "connections, divided by the difference): " +
                       ", ".join(f"{LABELS[c]} {v:.1f} KiB" for c, v in per.items()) + ".\n")
    out.append("Raw numbers (every round) are in the JSON file next to this one; how each "
               "scenario is measured and the proxies' configs: bench/README.md.\n")
    return "\n".join(out)


def _fmt_target(v) -> str:
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def len_body(results: dict) -> int:
    return results["params"].get("s1_request_bytes", 0)


def per_connection_kib(growth: dict) -> dict:
    ns = sorted(growth, key=int)
    if len(ns) < 2:
        return {}
    lo, hi = ns[0], ns[-1]
    out = {}
    for cand in PROXIES:
        a = _med(growth[lo].get(cand, {}).get("rss_mib"))
        b = _med(growth[hi].get(cand, {}).get("rss_mib"))
        if a is not None and b is not None:
            out[cand] = (b - a) * 1024 / (int(hi) - int(lo))
    return out


def headline(results: dict) -> str:
    """The README's table: the numbers a user asks for first, medians over the rounds."""
    s, meta = results["summary"], results["meta"]
    rows = []
    overhead = s.get("overhead", {})
    for conns, row in overhead.items():
        rows.append([f"req/s, {_conns(conns)} (× nginx)"] + [
            f"{_num(_med(row[c]['rps']))} ({ratio(row[c]['rps'], row['nginx']['rps'])})"
            for c in PROXIES])
        rows.append([f"added latency p50 / p99, {_conns(conns)} (µs)"] + [
            f"{_num(_med(row[c].get('added_p50_us')))} / {_num(_med(row[c].get('added_p99_us')))}"
            for c in PROXIES])
    if overhead:
        rows.append([f"proxy CPU per request, {' / '.join(overhead)} connections (µs)"] + [
            " / ".join(_num(_med(row[c]["cpu_us_per_request"]), 1) for row in overhead.values())
            for c in PROXIES])
    st = s.get("streaming")
    if st:
        rows.append(["SSE: added latency per event p50 / p99 (µs)"] + [
            f"{_num(_med(st[c].get('added_p50_us')), 1)} / "
            f"{_num(_med(st[c].get('added_p99_us')), 1)}" for c in PROXIES])
    m = s.get("memory")
    if m:
        rows.append(["RSS idle (MiB)"] + [_num(_med(m["idle"].get(c)), 1) for c in PROXIES])
        n = results["params"]["s4_held"]
        ours_held = _num(_med(m["held"].get(HELD_WAKING)), 1)
        rows.append([f"RSS, {n} requests with 4 KiB bodies held / in flight (MiB)"] + [
            (f"{ours_held} / " if c == "vllm-autoscaler" else "") + _num(_med(m["held"].get(c)), 1)
            for c in PROXIES])
        rows.append(["RSS under 256-connection load (MiB)"] +
                    [_num(_med(m["under_load"].get(c)), 1) for c in PROXIES])
    g = s.get("growth")
    if g:
        n = max(g, key=int)
        rows.append([f"RSS with {n} idle keep-alive connections (MiB)"] +
                    [_num(_med(g[n][c]["rss_mib"]), 1) for c in PROXIES])
    cs = s.get("cold_start")
    if cs:
        rows.append([f"wake: ready → first byte, {' / '.join(cs)} held (ms)"] +
                    [" / ".join(_num(_med(r["first_byte_ms"]), 1) for r in cs.values()),
                     "—", "—"])
    m = meta["machine"]
    return (_table(["", "vllm-autoscaler", "nginx", "HAProxy"], rows) +
            f"\n{m['cpu_model']}, {m['cores']} cores, one worker/thread per proxy; "
            f"`{meta['command']}` ({meta['started'][:10]}); every number and its spread: "
            "[bench/results/latest.md](bench/results/latest.md).\n")
