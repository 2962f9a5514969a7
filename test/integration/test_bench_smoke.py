"""The benchmark harness (bench/run) in its smoke mode: every scenario, every candidate, smallest
sizes, a few seconds. Not a measurement: it keeps bench/run from rotting. Needs nginx, haproxy and
wrk (scripts/setup installs them); without them this test fails, it does not skip."""

import json
import os
import pathlib
import shutil
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

CANDIDATES = ["direct", "vllm-autoscaler", "nginx", "haproxy"]
PROXIES = CANDIDATES[1:]


def _listing(d: pathlib.Path) -> list:
    return sorted((p.name, p.stat().st_mtime_ns) for p in d.iterdir()) if d.exists() else []


def test_bench_smoke_run_measures_every_scenario_for_every_candidate(tmp_path):
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"  # where nginx and haproxy live
    missing = [t for t in ("nginx", "haproxy", "wrk", "taskset")
               if shutil.which(t, path=path) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/setup (it installs the "
                    "Debian packages nginx, haproxy and wrk that bench/run compares with)")
    results_dir = REPO / "bench" / "results"
    before = _listing(results_dir)

    started = time.monotonic()
    run = subprocess.run([str(REPO / "bench" / "run"), "--smoke", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ))
    took = time.monotonic() - started
    assert run.returncode == 0, \
        f"bench/run --smoke failed ({run.returncode}):\n{run.stderr[-6000:]}"

    data = json.loads((tmp_path / "smoke.json").read_text())
    markdown = (tmp_path / "smoke.md").read_text()
    assert _listing(results_dir) == before, "the smoke run wrote into bench/results"

    s = data["summary"]
    for conns, row in s["overhead"].items():
        for c in CANDIDATES:
            assert row[c]["rps"]["median"] > 0 and row[c]["p99_us"]["median"] > 0, (conns, c)
            assert row[c]["errors"] == 0, (conns, c, row[c])
        for c in PROXIES:
            assert row[c]["added_p50_us"] is not None and row[c]["cpu_us_per_request"], (conns, c)
    for c in CANDIDATES:
        st = s["streaming"][c]
        assert st["events_per_stream"] >= data["params"]["s2_events"], (c, st)
        assert st["ttfb_us"]["median"] > 0 and st["event_p99_us"]["median"] > 0, (c, st)
    for c in PROXIES:
        assert s["streaming"][c]["added_p99_us"] is not None, c
    for n, row in s["cold_start"].items():
        assert row["answered_200"] == int(n) and row["first_byte_ms"]["median"] >= 0, (n, row)
    mem = s["memory"]
    for c in PROXIES:
        assert mem["idle"][c]["median"] > 0, c
        assert mem["held"][c]["median"] > 0, c
        assert mem["held_reached"][c] >= data["params"]["s4_held"], c
        assert mem["under_load"][c]["median"] > 0, c
        assert mem["peak"][c] > 0, c
    assert mem["held"]["vllm-autoscaler (held, backend waking)"]["median"] > 0
    for n, row in s["growth"].items():
        for c in CANDIDATES:
            assert row[c]["p50_us"]["median"] > 0 and row[c]["still_open"] == int(n), (n, c, row[c])
        for c in PROXIES:
            assert row[c]["rss_mib"]["median"] > 0, (n, c)
    assert data["targets"], "no target was evaluated"

    for title in ("## 1. Steady-state overhead", "## 2. Streaming", "## 3. Cold start",
                  "## 4. Memory", "## 5. Growth", "## Targets"):
        assert title in markdown, title
    assert "bench/run --smoke" in markdown and data["meta"]["machine"]["cpu_model"] in markdown
    print(f"bench/run --smoke took {took:.1f} s")


def test_profile_smoke_run_measures_every_floor(tmp_path):
    """bench/profile.py for one short round: every candidate, the floors included, answers wrk's
    requests without an error and has its CPU time per request read."""
    out = tmp_path / "profile.json"
    run = subprocess.run(["/usr/bin/python3", str(REPO / "bench" / "profile.py"), "--conns", "4",
                          "--rounds", "1", "--seconds", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert run.returncode == 0, f"bench/profile.py failed ({run.returncode}):\n" \
                                f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    runs = json.loads(out.read_text())["conns"]["4"]
    assert sorted(runs) == sorted(["vllm-autoscaler", "nginx", "floor-coro", "floor-coro-typed",
                                   "floor-asio", "floor-epoll"])
    for name, (m,) in runs.items():
        assert m["rps"] > 0 and m["errors"] == 0, (name, m)
        assert m["user_us"] + m["kernel_us"] > 0, (name, m)
    assert "| floor-epoll |" in run.stdout
