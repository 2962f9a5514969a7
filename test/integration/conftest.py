"""pytest setup for the integration tests: the real binaries on loopback, stopped by PID."""

import pathlib
import sys

import pytest

_TEST = pathlib.Path(__file__).resolve().parents[1]
for sub in ("support",):
    path = str(_TEST / sub)
    if path not in sys.path:
        sys.path.insert(0, path)

import support  # noqa: E402
import proxy as proxy_support  # noqa: E402


@pytest.fixture
def procs():
    """A list to append Procs to; all of them are stopped after the test, and none may have
    printed a sanitizer report (the suite also runs on the ASan+UBSan build)."""
    started: list = []
    yield started
    for p in reversed(started):
        p.stop()
    reports = support.sanitizer_reports({repr(p): p.output() for p in started})
    assert not reports, "sanitizer report:\n" + "\n".join(reports)


@pytest.fixture
def proxy(procs):
    """Factory: proxy(yaml_text, *args) -> Proxy, stopped after the test."""

    def start(config, *args, env=None, wait=True):
        p = proxy_support.start_proxy(config, *args, env=env, wait=wait)
        procs.append(p)
        return p

    return start


@pytest.fixture
def sim(procs):
    def start(*extra_args, port=None, model="sim-model", wait=True):
        p = support.start_sim(port, model, *extra_args, wait=wait)
        procs.append(p)
        return p

    return start
