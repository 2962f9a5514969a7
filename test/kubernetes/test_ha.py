"""Several proxy replicas in front of one vLLM Deployment, on the real control plane
(docs/high-availability.md): proxy processes with different identities coordinate through
coordination.k8s.io/v1 Leases, as the shipped ServiceAccount (whose Role has exactly the Lease verbs
they use).

- traffic only through a follower, for longer than idle_timeout: the leader does not scale the
  backend down under it; after the last response the Deployment is at 0 within idle_timeout and a
  few heartbeats;
- the leader SIGKILLed while idle: the other takes the leader Lease once it has expired, and the
  scale-down comes neither before idle_timeout after the last activity nor later than that plus
  lease_duration, the new leader's wait of one lease_duration and a few heartbeats."""

import os
import signal
import time

from ha import BEAT, CHAT, LEASE, coordination, lease_writes, replicas, scale_downs, start_replicas
from support import eventually, http


def test_traffic_through_a_follower_keeps_the_backend_up_and_the_leader_stops_it_after(
        cluster, kubernetes_config, proxy):
    idle = 6.0
    leader, follower = start_replicas(cluster, kubernetes_config, proxy, idle)
    writes = {p.pid: lease_writes(p) for p in (leader, follower)}
    began = time.monotonic()
    assert http("POST", follower.url + "/v1/chat/completions", CHAT, None, 60)[0] == 200
    # Requests through the follower only, for 3 idle_timeouts: never stopped under them.
    end = time.monotonic() + 3 * idle
    while time.monotonic() < end:
        status = http("POST", follower.url + "/v1/chat/completions", CHAT, None, 60)[0]
        last = time.monotonic()
        assert status == 200 and replicas(cluster) == 1, (status, replicas(cluster))
        time.sleep(1.0)
    # What coordination costs the API: the leader writes its Lease and its member Lease each
    # heartbeat, a follower its member Lease (and each lists the Leases once).
    took = time.monotonic() - began
    rates = {who: (lease_writes(p) - writes[p.pid]) / took
             for who, p in (("leader", leader), ("follower", follower))}
    print(f"\nLease writes per second (heartbeat {BEAT:g} s): leader {rates['leader']:.2f}, "
          f"follower {rates['follower']:.2f}")
    assert 1.5 / BEAT <= rates["leader"] <= 2.5 / BEAT and 0.5 / BEAT <= rates["follower"] <= 1.5 / BEAT
    assert leader.events("backend state") and not scale_downs(leader), "the leader stopped it"
    eventually(lambda: replicas(cluster) == 0, timeout=idle + 20, what="the Deployment at 0")
    stopped = time.monotonic()
    assert stopped - last >= 0.8 * idle, "stopped before idle_timeout after the last request"
    assert stopped - last <= idle + 10 * BEAT + 5, "stopped late"
    downs = scale_downs(leader)
    assert downs and "every proxy replica" in downs[0]["cause"], downs
    assert not scale_downs(follower)
    print(f"\nDeployment at 0 {stopped - last:.1f} s after the last request through the follower "
          f"(idle_timeout {idle:g} s)")
    cluster.wait_no_pods()


def test_the_leader_killed_while_idle_is_replaced_and_the_backend_still_stops_in_time(
        cluster, kubernetes_config, proxy):
    idle = 8.0
    leader, follower = start_replicas(cluster, kubernetes_config, proxy, idle)
    assert http("POST", leader.url + "/v1/chat/completions", CHAT, None, 60)[0] == 200
    last = time.monotonic()
    time.sleep(1.0)
    os.kill(leader.pid, signal.SIGKILL)  # its Leases stay as they were: expired after LEASE
    killed = time.monotonic()
    eventually(lambda: coordination(follower)["leading"], timeout=LEASE + 10,
               what="the follower leading")
    took_over = time.monotonic()
    eventually(lambda: replicas(cluster) == 0, timeout=idle + 2 * LEASE + 20,
               what="the Deployment at 0")
    stopped = time.monotonic()
    assert took_over - killed <= LEASE + 4 * BEAT + 2, "took over late"
    assert stopped - last >= 0.8 * idle, "stopped before idle_timeout"
    assert stopped - max(last + idle, took_over + LEASE) <= 4 * BEAT + 5, "stopped late"
    print(f"\nleader killed: taken over after {took_over - killed:.1f} s, Deployment at 0 "
          f"{stopped - last:.1f} s after the last request (idle_timeout {idle:g} s, lease "
          f"{LEASE:g} s)")
    cluster.wait_no_pods()


def test_a_stopped_replica_holds_the_scale_down_while_its_lease_is_live_and_is_ignored_after(
        cluster, kubernetes_config, proxy):
    idle, lease = 3.0, 8.0
    leader, follower = start_replicas(cluster, kubernetes_config, proxy, idle, lease=lease)
    # Traffic until the new leader's own wait of one lease_duration is over: from then on only the
    # stopped replica can hold the scale-down back.
    led = time.monotonic()
    while time.monotonic() < led + lease:
        assert http("POST", leader.url + "/v1/chat/completions", CHAT, None, 60)[0] == 200
        time.sleep(1.0)
    os.kill(follower.pid, signal.SIGSTOP)  # black-holed: its member Lease is no longer renewed
    frozen = time.monotonic()
    try:
        # Idle everywhere after idle_timeout, but the stopped replica cannot answer the fence: no
        # scale-down while its Lease is live.
        fenced = False  # a scale-down proposed, waiting on the stopped replica's answer
        while time.monotonic() < frozen + lease - 2 * BEAT:
            assert replicas(cluster) == 1, "scaled down while the stopped replica's Lease was live"
            fenced = fenced or coordination(leader).get("fence") is not None
            time.sleep(0.2)
        eventually(lambda: replicas(cluster) == 0, timeout=idle + 2 * lease + 10, what="the Deployment at 0")
        stopped = time.monotonic()
        c = coordination(leader)
        assert [m["identity"] for m in c["members"] if m["live"]] == [c["identity"]], c["members"]
    finally:
        os.kill(follower.pid, signal.SIGCONT)
    assert fenced, "no scale-down was proposed while the stopped replica's Lease was live"
    assert stopped - frozen <= idle + 2 * lease + 4 * BEAT + 5, "stopped late"
    print(f"\nreplica stopped (SIGSTOP): Deployment at 0 {stopped - frozen:.1f} s after (lease_duration "
          f"{lease:g} s, idle_timeout {idle:g} s)")
    cluster.wait_no_pods()
