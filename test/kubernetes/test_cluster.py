"""The test cluster itself, before any proxy runs in it: the deploy/kubernetes manifests apply to a
real 1.20 apiserver, the proxy's Role grants exactly what the proxy needs (the kubernetes scaler,
the coordination, the Service's EndpointSlices), the real controllers and the test kubelet turn a
scale into a running, Ready vllm-sim behind the service proxy (and back), and the service proxy
relays like a Service."""

import concurrent.futures as cf
import json
import socket
import struct
import threading
import time
import urllib.parse

import pytest
import yaml
from conftest import MODEL, SIM_ARGS
from k8s.kubelet import SIMULATE_ANNOTATION, ServiceProxy
from support import RawUpstream, chat, eventually, http, metrics, sse_events, wait_pid_gone

APPS = "/apis/apps/v1/namespaces"


def closed_at_once(port: int) -> bool:
    """Connects to 127.0.0.1:`port`, sends a request and returns True when the connection is closed
    (EOF or reset; the reset may even beat the end of connect()) within 2 s without a byte of answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            return s.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


# --- the manifests ---


def test_the_deploy_manifests_apply_to_the_apiserver(cluster):
    cp, ns, deploy = cluster.control_plane, cluster.namespace, cluster.deploy
    r = cluster.kubectl("get", "serviceaccounts,roles,rolebindings,configmaps,deployments,poddisruptionbudgets,"
                        "services", "-o", "json")
    found = {(o["kind"], o["metadata"]["name"]) for o in json.loads(r.stdout)["items"]}
    applied = {(o["kind"], o["metadata"]["name"]) for o in deploy.objects}
    assert applied <= found, applied - found
    assert {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "PodDisruptionBudget",
            "Service"} == {kind for kind, _ in applied}

    vllm = cluster.deployment()
    assert vllm["spec"]["replicas"] == 0
    assert vllm["spec"]["template"]["spec"]["containers"][0]["args"] == SIM_ARGS
    _, binding = cp.api("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/vllm-autoscaler")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "vllm-autoscaler", "namespace": ns}]
    config = yaml.safe_load(deploy.proxy_config)
    assert config["backends"][0]["scaler"]["deployment"] == cluster.deployment_name

    # The proxy's own Deployment makes its two pods, which nothing schedules or runs: not the
    # kubelet's. Each is named by its pod (POD_NAME, the coordination identity in the config), and
    # the PodDisruptionBudget covers both.
    def proxy_pods():
        _, pods = cp.api("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector="
                                "app.kubernetes.io%2Fname%3Dvllm-autoscaler")
        return pods["items"] if len(pods["items"]) == 2 else None

    pods = eventually(proxy_pods, timeout=30, what="the proxy's two pods")
    time.sleep(0.5)  # the kubelet would have bound them by now
    for pod in pods:
        _, pod = cp.api("GET", f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}")
        assert pod["status"]["phase"] == "Pending"
        assert "nodeName" not in pod["spec"]
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        [spread] = pod["spec"]["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    assert cluster.kubelet.pods() == {}
    assert config["coordination"] == {**config["coordination"], "type": "kubernetes", "identity": "${POD_NAME}"}
    pdb = json.loads(cluster.kubectl("get", "poddisruptionbudgets", "vllm-autoscaler", "-o", "json").stdout)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "vllm-autoscaler"}
    # The budget's controller counts the proxy's pods (none Ready here: none may be evicted).
    eventually(lambda: json.loads(cluster.kubectl("get", "poddisruptionbudgets", "vllm-autoscaler", "-o",
                                                  "json").stdout).get("status", {}).get("expectedPods") == 2,
               timeout=30, what="the budget counting two pods")


# --- the proxy's Role ---


def test_the_proxy_service_account_may_do_what_the_proxy_does_and_nothing_else(cluster):
    cp, ns, name = cluster.control_plane, cluster.namespace, cluster.deployment_name
    token = cluster.proxy_token()

    def call(method, path, body=None):
        return cp.api(method, path, body, token=token)

    scale = f"{APPS}/{ns}/deployments/{name}/scale"
    status, obj = call("GET", scale)
    assert status == 200, obj
    assert obj["kind"] == "Scale" and obj["spec"].get("replicas", 0) == 0
    patches = cluster.scale_patches()
    status, obj = call("PATCH", scale, {"spec": {"replicas": 0}})
    assert status == 200, obj
    eventually(lambda: cluster.scale_patches() == patches + 1, timeout=5, what="the PATCH in the audit log")

    by_name = urllib.parse.urlencode({"fieldSelector": f"metadata.name={name}"})
    status, obj = call("GET", f"{APPS}/{ns}/deployments?{by_name}")
    assert status == 200, obj
    assert [d["metadata"]["name"] for d in obj["items"]] == [name]
    status, obj = call("GET", f"{APPS}/{ns}/deployments?{by_name}&watch=1&timeoutSeconds=1")
    assert status == 200, obj
    first = json.loads(obj.splitlines()[0]) if isinstance(obj, str) else obj
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", name)

    pods = urllib.parse.urlencode({"labelSelector": cluster.deploy.selector})
    assert call("GET", f"/api/v1/namespaces/{ns}/pods?{pods}")[0] == 200
    assert call("GET", f"/api/v1/namespaces/{ns}/pods?{pods}&watch=1&timeoutSeconds=1")[0] == 200

    def event(reason):
        return {"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": f"{name}."},
                "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": ns, "name": name},
                "reason": reason, "message": "test", "type": "Normal", "count": 1,
                "source": {"component": "vllm-autoscaler"}}

    status, up = call("POST", f"/api/v1/namespaces/{ns}/events", event("ScaledUp"))
    assert status == 201, up
    assert call("POST", f"/api/v1/namespaces/{ns}/events", event("ScaledToZero"))[0] == 201
    status, obj = call("PATCH", f"/api/v1/namespaces/{ns}/events/{up['metadata']['name']}", {"count": 2})
    assert status == 200, obj
    # In the order of their last write: the repeated ScaledUp last.
    assert [(e["reason"], e["count"]) for e in cluster.proxy_events()] == [("ScaledToZero", 1), ("ScaledUp", 2)]
    assert [e["reason"] for e in cluster.proxy_events("ScaledUp")] == ["ScaledUp"]

    # Several proxy replicas (coordination): list, create and update Leases in the namespace; no
    # get, watch, patch or delete.
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "rbac-check", "labels": {"vllm-autoscaler.io/lease-group": "rbac"}},
             "spec": {"holderIdentity": "proxy-0", "leaseDurationSeconds": 15}}
    status, created = call("POST", leases, lease)
    assert status == 201, created
    status, listed = call("GET", f"{leases}?labelSelector=vllm-autoscaler.io%2Flease-group%3Drbac")
    assert status == 200 and [i["metadata"]["name"] for i in listed["items"]] == ["rbac-check"], listed
    created["spec"]["holderIdentity"] = "proxy-1"
    status, updated = call("PUT", f"{leases}/rbac-check", created)
    assert status == 200 and updated["spec"]["holderIdentity"] == "proxy-1", updated
    assert call("PUT", f"{leases}/rbac-check", created)[0] == 409  # an old resourceVersion
    assert call("GET", f"{leases}/rbac-check")[0] == 403
    assert call("GET", f"{leases}?watch=1&timeoutSeconds=1")[0] == 403
    assert call("PATCH", f"{leases}/rbac-check", {"spec": {"holderIdentity": "x"}})[0] == 403
    assert call("DELETE", f"{leases}/rbac-check")[0] == 403
    assert call("GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases")[0] == 403

    # The vLLM Service's EndpointSlices (discovery.k8s.io/v1beta1 on 1.20): list and watch, by the
    # Service's label; no get (not even of one slice by name), no write, no other namespace.
    slices = f"/apis/discovery.k8s.io/v1beta1/namespaces/{ns}/endpointslices"
    of_vllm = urllib.parse.urlencode({"labelSelector": "kubernetes.io/service-name=vllm"})
    status, listed = call("GET", f"{slices}?{of_vllm}")
    assert status == 200 and listed["kind"] == "EndpointSliceList", listed
    assert all(s["metadata"]["labels"]["kubernetes.io/service-name"] == "vllm" for s in listed["items"])
    assert call("GET", f"{slices}?{of_vllm}&watch=1&timeoutSeconds=1")[0] == 200
    assert call("GET", f"{slices}/vllm-abcde")[0] == 403
    assert call("POST", slices, {"apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
                                 "metadata": {"name": "rbac-check"}, "addressType": "IPv4",
                                 "endpoints": []})[0] == 403
    assert call("DELETE", f"{slices}/vllm-abcde")[0] == 403
    assert call("GET", "/apis/discovery.k8s.io/v1beta1/namespaces/default/endpointslices")[0] == 403
    assert call("GET", "/apis/discovery.k8s.io")[0] == 200  # which versions: any authenticated user

    # Refused: a PUT of the scale, any other Deployment, the Deployment itself, Secrets, a list of
    # every Deployment, another namespace.
    _, current = call("GET", scale)
    assert call("PUT", scale, current)[0] == 403
    assert call("GET", f"{APPS}/{ns}/deployments/vllm-autoscaler/scale")[0] == 403
    assert call("PATCH", f"{APPS}/{ns}/deployments/{name}", {"spec": {"replicas": 1}})[0] == 403
    assert call("GET", f"/api/v1/namespaces/{ns}/secrets")[0] == 403
    assert call("GET", f"{APPS}/{ns}/deployments")[0] == 403
    assert call("GET", f"{APPS}/default/deployments/{name}/scale")[0] == 403

    # The kubeconfig itself works for kubectl, in its namespace, with the same limits.
    r = cp.kubectl("get", "deployment", name, "-o", "name", kubeconfig=cluster.proxy_kubeconfig)
    assert r.stdout.strip() == f"deployment.apps/{name}"
    r = cp.kubectl("get", "secrets", kubeconfig=cluster.proxy_kubeconfig, check=False)
    assert r.returncode != 0 and "forbidden" in r.stderr.lower()
    assert cluster.scale_patches() == patches + 1  # an admin's or a refused PUT is not the proxy's PATCH


# --- the proxy's setup checks ---


def may(cluster, token, verb, resource, subresource="", group="apps"):
    """What a SelfSubjectAccessReview answers the holder of `token` (as the proxy asks it)."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {
                  "namespace": cluster.namespace, "verb": verb, "group": group,
                  "resource": resource, "subresource": subresource,
                  "name": cluster.deployment_name}}}
    status, obj = cluster.control_plane.api(
        "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review, token=token)
    assert status == 201, obj
    return obj["status"]["allowed"]


def readyz(p):
    status, _, body = http("GET", p.admin_url + "/readyz")
    return status, body.decode()


def test_a_role_without_patch_keeps_the_proxy_unready_naming_the_verb(cluster, kubernetes_config,
                                                                      proxy):
    """A rollout with a bad Role never becomes Ready: /readyz is 503 from the start, and the log,
    /status and a metric say which verb is missing. With the shipped Role it is ready."""
    ns, name = cluster.namespace, cluster.deployment_name
    token = cluster.proxy_token()
    missing = f'cannot patch apps/deployments/scale "{name}" in namespace "{ns}"'
    with cluster.role_without(["deployments/scale"], "patch"):
        eventually(lambda: not may(cluster, token, "patch", "deployments", "scale"), timeout=10,
                   what="the Role without patch in force")
        p = proxy(kubernetes_config())
        seen = []

        def says_missing():
            seen.append(readyz(p))
            status, body = seen[-1]
            return status == 503 and missing in json.loads(body)["error"]["message"]

        eventually(says_missing, timeout=30, what="/readyz naming the missing verb")
        assert all(status == 503 for status, _ in seen), seen  # never ready, not for a moment
        assert json.loads(seen[-1][1])["error"]["message"] == f"not ready: backend 'vllm': {missing}"
        assert p.backend()["setup_problems"] == [missing]
        assert metrics(p.admin_url + "/metrics")['vllm_autoscaler_setup_problems{backend="vllm"}'] == 1
        assert [e["problem"] for e in p.events("setup problem")] == [missing]
        assert p.backend()["state"] == "asleep" and p.backend()["wakes"] == 0
    eventually(lambda: may(cluster, token, "patch", "deployments", "scale"), timeout=10,
               what="the shipped Role in force")

    good = proxy(kubernetes_config())
    eventually(lambda: readyz(good) == (200, "ready\n"), timeout=30, what="ready with the shipped Role")
    assert good.backend()["setup_problems"] == []
    assert metrics(good.admin_url + "/metrics")['vllm_autoscaler_setup_problems{backend="vllm"}'] == 0
    assert good.events("setup problem") == []


# --- scale up and down ---


def test_a_scale_to_one_runs_a_ready_sim_behind_the_service_and_a_scale_to_zero_stops_it(cluster):
    kubelet = cluster.kubelet
    cluster.kubectl("scale", "deployment", cluster.deployment_name, "--replicas=1")
    eventually(lambda: cluster.deployment()["status"].get("readyReplicas") == 1, timeout=30,
               what="readyReplicas 1")
    [(pod_name, pod)] = kubelet.pods().items()
    assert pod["pid"] is not None and pod["address"].startswith("127.0.0.")
    eventually(lambda: kubelet.endpoints() == [(pod["address"], 8000)], timeout=5, what="the endpoint")
    assert cluster.pods() == [pod_name]
    _, api_pod = cluster.control_plane.api("GET", f"/api/v1/namespaces/{cluster.namespace}/pods/{pod_name}")
    assert api_pod["status"]["podIP"] == pod["address"]

    status, _, body = http("GET", kubelet.service_url + "/v1/models")
    assert status == 200
    assert [m["id"] for m in json.loads(body)["data"]] == [MODEL]
    events = sse_events(kubelet.service_url + "/v1/chat/completions", chat(5, MODEL, stream=True))
    assert events[-1][1] == "[DONE]" and len(events) == 5 + 2

    # 200 connections at once, each on its own relay.
    with cf.ThreadPoolExecutor(200) as pool:
        codes = list(pool.map(lambda _: http("GET", kubelet.service_url + "/v1/models")[0], range(200)))
    assert codes == [200] * 200

    cluster.scale(0)
    eventually(lambda: cluster.pods() == [], timeout=30, what="the pod deleted")
    wait_pid_gone(pod["pid"])
    assert kubelet.endpoints() == []
    cluster.wait_no_pods(timeout=10)
    # The Deployment's status follows the pod's deletion a moment later (ReplicaSet, then Deployment).
    eventually(lambda: not cluster.deployment()["status"].get("readyReplicas"), timeout=10,
               what="readyReplicas gone")
    eventually(lambda: kubelet.service_connections() == 0, timeout=5, what="no relayed connection")
    assert closed_at_once(kubelet.service_port)


# --- the service proxy ---


def test_the_service_closes_connections_while_no_pod_is_ready(cluster):
    assert cluster.pods() == []
    assert closed_at_once(cluster.kubelet.service_port)

    # A pod that never gets Ready (its image "does not pull"): still no endpoint.
    cluster.set_simulate("imagepull")
    try:
        cluster.scale(1)

        def pulling():
            names = cluster.pods()
            if len(names) != 1:
                return False  # the ReplicaSet has not created it yet
            name = names[0]
            code, pod = cluster.control_plane.api("GET", f"/api/v1/namespaces/{cluster.namespace}/pods/{name}")
            if code != 200 or not isinstance(pod, dict):
                return False  # deleted and replaced in between
            statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
            return statuses[0].get("state", {}).get("waiting", {}).get("reason") in ("ErrImagePull",
                                                                                    "ImagePullBackOff")

        eventually(pulling, timeout=20, what="the pod waiting for its image")
        assert len(cluster.kubelet.pods()) == 1 and cluster.kubelet.endpoints() == []
        assert closed_at_once(cluster.kubelet.service_port)
    finally:
        cluster.scale(0)
        cluster.set_simulate(None)
    cluster.wait_no_pods(timeout=20)
    assert SIMULATE_ANNOTATION not in (cluster.deployment()["spec"]["template"]["metadata"].get("annotations") or {})


def echo_until_eof(conn):
    """RawUpstream handler: reads until the client's EOF, then answers b"got:" + what it read."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    conn.sendall(b"got:" + data)


def test_the_service_proxy_passes_a_half_close_on_both_ways():
    up = RawUpstream(echo_until_eof)
    sp = ServiceProxy(lambda: [("127.0.0.1", up.port)])
    try:
        with socket.create_connection(("127.0.0.1", sp.port), timeout=5) as s:
            s.sendall(b"hello")
            s.shutdown(socket.SHUT_WR)  # the upstream sees EOF only if the proxy passes it on
            answer = b""
            while chunk := s.recv(65536):  # and we see EOF once the upstream closes
                answer += chunk
        assert answer == b"got:hello"
        eventually(lambda: sp.connections() == 0, timeout=5, what="the relay closed")
    finally:
        sp.close()
        up.close()


def test_the_service_proxy_relays_each_chunk_of_a_stream_as_it_comes():
    def stream(conn):
        for i in range(10):
            conn.sendall(f"data: {i}\n\n".encode())
            time.sleep(0.05)

    up = RawUpstream(stream)
    sp = ServiceProxy(lambda: [("127.0.0.1", up.port)])
    try:
        with socket.create_connection(("127.0.0.1", sp.port), timeout=5) as s:
            arrivals, data = [], b""
            while chunk := s.recv(65536):
                arrivals.append(time.monotonic())
                data += chunk
        assert data == b"".join(f"data: {i}\n\n".encode() for i in range(10))
        assert len(arrivals) >= 8 and arrivals[-1] - arrivals[0] >= 0.35  # not held back and batched
    finally:
        sp.close()
        up.close()


def test_the_service_proxy_passes_a_reset_on_as_a_reset():
    def reset_after_reading(conn):
        conn.recv(1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends RST

    up = RawUpstream(reset_after_reading)
    sp = ServiceProxy(lambda: [("127.0.0.1", up.port)])
    try:
        with socket.create_connection(("127.0.0.1", sp.port), timeout=5) as s:
            s.sendall(b"x")
            with pytest.raises(ConnectionResetError):
                s.recv(1)
        eventually(lambda: sp.connections() == 0, timeout=5, what="the relay closed")
    finally:
        sp.close()
        up.close()


def test_the_service_proxy_relays_many_connections_at_once_round_robin_and_closes_them_on_close():
    release = threading.Event()

    def greet(tag):
        def handle(conn):
            conn.sendall(tag)
            release.wait(20)  # hold the connection open
        return handle

    ups = [RawUpstream(greet(b"a")), RawUpstream(greet(b"b"))]
    sp = ServiceProxy(lambda: [("127.0.0.1", u.port) for u in ups])
    clients = []
    try:
        for _ in range(250):
            clients.append(socket.create_connection(("127.0.0.1", sp.port), timeout=5))
        tags = [c.recv(1) for c in clients]
        assert sorted(set(tags)) == [b"a", b"b"]
        assert tags == tags[:2] * 125  # alternating, in the order of the connections
        assert sp.connections() == 250
        sp.close()  # ends every relayed connection: each client sees EOF
        assert all(c.recv(1) == b"" for c in clients)
        assert sp.connections() == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", sp.port), timeout=2)
    finally:
        release.set()
        for c in clients:
            c.close()
        sp.close()
        for u in ups:
            u.close()


def test_the_service_proxy_resets_connections_without_an_endpoint():
    sp = ServiceProxy(lambda: [])
    try:
        assert closed_at_once(sp.port)
    finally:
        sp.close()
