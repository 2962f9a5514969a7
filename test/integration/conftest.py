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
from fixtures import procs, proxy  # noqa: E402,F401  (shared fixtures)


@pytest.fixture
def sim(procs):
    def start(*extra_args, port=None, model="sim-model", wait=True):
        p = support.start_sim(port, model, *extra_args, wait=wait)
        procs.append(p)
        return p

    return start
