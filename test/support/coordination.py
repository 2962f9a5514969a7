"""Several proxy processes coordinated through Leases (`coordination: {type: kubernetes}`) on a test
control plane: the config section that makes a proxy one of them, what its /status says about the
group, and the wait for the group to agree on a leader. Used by test/kubernetes/ha.py and
bench/k8s_cold_start.py."""

from support import eventually


def coordination_yaml(cluster, identity: str, lease_name: str, lease: float, beat: float) -> str:
    """The top-level `coordination:` section (YAML lines) for the replica `identity` of the group
    `lease_name`, with its Leases in the namespace of `cluster` (k8s.cluster.Cluster) and the proxy's
    credentials; `lease` and `beat` (lease_duration, heartbeat_interval) in seconds."""
    return (f"coordination:\n  type: kubernetes\n  identity: {identity}\n"
            f"  lease_name: {lease_name}\n  namespace: {cluster.namespace}\n"
            f"  lease_duration: {lease * 1000:g}ms\n  heartbeat_interval: {beat * 1000:g}ms\n"
            f"  kubeconfig: {cluster.proxy_kubeconfig}\n")


def coordination(p) -> dict:
    """The `coordination` object of the proxy's /status."""
    return p.status()["coordination"]


def settled(ps, timeout: float = 30) -> list:
    """Once every proxy of `ps` sees the same leader and all of them live: the leader first, then
    the followers in the order given."""
    def agreed():
        seen = [coordination(p) for p in ps]
        return seen[0]["leader"] and all(
            c["leader"] == seen[0]["leader"] and sum(m["live"] for m in c["members"]) == len(ps) for c in seen)

    eventually(agreed, timeout=timeout, what="one leader seen by every replica")
    leader = next(p for p in ps if coordination(p)["leading"])
    return [leader] + [p for p in ps if p is not leader]
