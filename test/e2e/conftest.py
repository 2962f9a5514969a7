"""pytest setup for the end-to-end tests: makes `support` importable and offers fixtures that
stop every process they started, even when a test fails."""

import pathlib
import sys

import pytest

_TEST = pathlib.Path(__file__).resolve().parents[1]
for _sub in ("support", "e2e"):
    if str(_TEST / _sub) not in sys.path:
        sys.path.insert(0, str(_TEST / _sub))

import support  # noqa: E402


@pytest.fixture
def procs():
    """A list to append Procs to; all of them are stopped after the test."""
    started: list[support.Proc] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture
def sim(procs):
    """Factory: sim(*extra_args, port=None, model="sim-model", wait=True, env=None) -> Proc,
    stopped after the test."""

    def start(*extra_args, port=None, model="sim-model", wait=True, env=None):
        p = support.start_sim(port, model, *extra_args, wait=wait, env=env)
        procs.append(p)
        return p

    return start
