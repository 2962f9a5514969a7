"""A watch resumed from a resourceVersion that etcd has compacted away: the apiserver answers
410 Expired, the proxy lists again, and no readiness is missed. This control plane compacts etcd
every second and serves watches from etcd directly (no watch cache), so an old resourceVersion
expires after a few writes."""

import time

from conftest import MODEL
from support import chat, eventually, http

SIM_ARGS = ["--model", MODEL, "--startup-delay", "1s", "--itl", "1ms"]
APISERVER_EXTRA_ARGS = "--etcd-compaction-interval=1s --watch-cache=false"


def test_an_expired_resource_version_is_listed_again_and_no_readiness_is_missed(
        cluster, kubernetes_config, proxy):
    p = proxy(kubernetes_config(idle="60s"))
    eventually(lambda: len(p.events("kubernetes list")) == 2, what="the first two lists")
    # Move etcd's revision on with writes to other objects, let compaction pass the proxy's
    # resourceVersion, then cut its watches: they resume from a compacted revision.
    for i in range(5):
        cluster.kubectl("create", "configmap", f"filler-{i}", "-n", cluster.namespace)
    time.sleep(3)
    cluster.control_plane.restart_apiserver()
    cluster.kubectl("scale", "deployment", cluster.deployment_name, "--replicas=1")
    p.wait_state("ready", timeout=30)  # learnt through the watch only: no request was sent
    expired = p.events("kubernetes watch expired; listing again")
    assert any(e["what"].startswith("deployment") for e in expired), p.events("kubernetes list")
    assert len(p.events("kubernetes list")) >= 3
    code, _, _ = http("POST", p.url + "/v1/chat/completions", chat(model=MODEL), None, 60)
    assert code == 200
    assert p.backend()["wakes"] == 0
