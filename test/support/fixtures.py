"""The pytest fixtures every suite shares (imported by test/integration/conftest.py and
test/kubernetes/conftest.py): the processes a test starts, stopped after it and checked for
sanitizer reports (the suites also run on the ASan+UBSan build)."""

import pytest

import proxy as proxy_support
import support


@pytest.fixture
def procs():
    """A list to append Procs to; all of them are stopped after the test, and none may have
    printed a sanitizer report."""
    started: list = []
    yield started
    for p in reversed(started):
        p.stop()
    reports = support.sanitizer_reports({repr(p): p.output() for p in started})
    assert not reports, "sanitizer report:\n" + "\n".join(reports)


@pytest.fixture
def proxy(procs):
    """Factory: proxy(yaml_text, *args, env=None, wait=True) -> Proxy, stopped after the test."""

    def start(config, *args, env=None, wait=True):
        p = proxy_support.start_proxy(config, *args, env=env, wait=wait)
        procs.append(p)
        return p

    return start
