"""The setup checks of a coordinated proxy (docs/high-availability.md, "Permissions"), on the real
control plane: at start and every 60 s the proxy asks, with SelfSubjectAccessReviews, whether it may
list, create and update coordination.k8s.io Leases in its namespace. A Role without `update` on
leases keeps a coordinated proxy unready from the start, /readyz naming the verb, /status listing
it under `coordination.problems` and the log saying it; with the shipped Role it is ready."""

import json

from support import eventually
from test_cluster import may, readyz
from ha import coordinated


def test_a_role_without_update_on_leases_keeps_a_coordinated_proxy_unready_naming_the_verb(
        cluster, kubernetes_config, proxy):
    token = cluster.proxy_token()

    def may_update_leases():
        return may(cluster, token, "update", "leases", group="coordination.k8s.io")

    missing = f'cannot update coordination.k8s.io/leases in namespace "{cluster.namespace}"'
    want = f"not ready: coordination: {missing}"
    with cluster.role_without(["leases"], "update"):
        eventually(lambda: not may_update_leases(), timeout=10, what="the Role without update in force")
        p = proxy(coordinated(kubernetes_config, cluster, "proxy-a", "60s"))
        seen = []

        def says_missing():
            seen.append(readyz(p))
            status, body = seen[-1]
            return status == 503 and json.loads(body)["error"]["message"] == want

        eventually(says_missing, timeout=30, what="/readyz naming the missing verb")
        assert all(status == 503 for status, _ in seen), seen  # never ready, not for a moment
        assert p.status()["coordination"]["problems"] == [missing]
        assert [e["problem"] for e in p.events("setup problem")] == [missing]
        assert p.backend()["setup_problems"] == []  # the scaler itself may do all it needs
    eventually(may_update_leases, timeout=10, what="the shipped Role in force")

    good = proxy(coordinated(kubernetes_config, cluster, "proxy-b", "60s"))
    eventually(lambda: readyz(good) == (200, "ready\n"), timeout=30, what="ready with the shipped Role")
    assert good.status()["coordination"]["problems"] == []
    assert good.events("setup problem") == []
