"""The shipped overlay, deploy/kubernetes/examples/overlay, as docs/kubernetes.md tells a user to
apply it, on a real 1.20 control plane: in front of "their own" vLLM Deployment (the vLLM example,
named and placed as the overlay says: not `vllm`, not in `llm`), with the API-key Secret made by
the documented `kubectl create secret`, then the overlay folder as it is, rendered and applied as
`kubectl apply -k` does (with the PodDisruptionBudget in the version the 1.20 server serves).

Checked: every object lands in the overlay's namespace with the patched values (the Role names the
user's Deployment and nothing else, the RoleBinding's subject, the image, the ConfigMap holds the
overlay's config.yaml, the Secret mounted and in the environment, the Ingress's host), and the
proxy serves with it: the built binary runs here with the ServiceAccount's own token and the config
taken from the applied ConfigMap (only the addresses, the kubeconfig and the keys file's path
changed for a process outside the cluster), its setup checks find nothing missing, a request with a
client key wakes the Deployment and gets the sim's 200 (the sim requires vLLM's key, which only
upstream_headers sends), and the proxy scales it back to zero.

The kubectl on PATH renders the overlay: 1.32 (kustomize v5) here, Debian 12's kubernetes-client
1.20 (kustomize v2.0.3) on a fresh machine."""

import base64
import json
import pathlib
import shutil
import subprocess
import time
import urllib.parse

import pytest
import yaml
from k8s.cluster import REPO, Cluster, apply_kustomization, apply_vllm_example, service_account_kubeconfig
from conftest import run_kubelet

from support import chat, eventually, http

OVERLAY = REPO / "deploy" / "kubernetes" / "examples" / "overlay"
BASE = REPO / "deploy" / "kubernetes" / "base"
KUSTOMIZATION = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
CONFIG_TEXT = (OVERLAY / "config.yaml").read_text()
CONFIG = yaml.safe_load(CONFIG_TEXT)
[BACKEND] = CONFIG["backends"]
NAMESPACE = KUSTOMIZATION["namespace"]
DEPLOYMENT = BACKEND["scaler"]["deployment"]
SERVICE = urllib.parse.urlsplit(BACKEND["upstream"]).hostname
MODEL = BACKEND["models"][0]
[IMAGE] = KUSTOMIZATION["images"]

SECRET = "vllm-autoscaler-keys"  # the name deployment-patch.yaml and the docs use
CLIENT_KEYS = "# the proxy's clients\nclient-key-a\n\nclient-key-b\n"
VLLM_KEY = "vllm-key-only-the-proxy-knows"  # vLLM's --api-key


def test_the_overlay_is_about_another_deployment_in_another_namespace_than_the_base():
    """Else the test below would not show that the patches work."""
    base = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    base_config = yaml.safe_load((BASE / "config.yaml").read_text())
    assert NAMESPACE != base["namespace"]
    assert DEPLOYMENT != base_config["backends"][0]["scaler"]["deployment"]
    assert MODEL  # the sim serves it under this name


@pytest.fixture(scope="module")
def user_deployment(control_plane):
    """The user's own vLLM Deployment at 0 with its Service, in the overlay's namespace: the vLLM
    example under the overlay's names, running vllm-sim with vLLM's --api-key."""
    return apply_vllm_example(control_plane, NAMESPACE, DEPLOYMENT, service_name=SERVICE,
                              sim_args=["--model", MODEL, "--api-key", VLLM_KEY, "--itl", "1ms"])


def quick_start_lines(*starts: str) -> list[str]:
    """The README's Kubernetes quick start lines that begin with `starts`, in that order."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Kubernetes quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = block.splitlines()
    return [next(line for line in lines if line.startswith(start)) for start in starts]


@pytest.fixture(scope="module")
def applied(control_plane, user_deployment, tmp_path_factory):
    """The README's quick start as a user runs it: the overlay copied beside a checkout (its
    deploy/ folder, here) and pointed at it by the README's own `cp` and `sed` lines, the Secret
    as docs/kubernetes.md creates it, then `kubectl apply -k` of the copy; the rendered objects."""
    work = tmp_path_factory.mktemp("user")
    checkout = work / "vllm-autoscaler"
    shutil.copytree(REPO / "deploy", checkout / "deploy")
    copy, point = quick_start_lines("cp -r deploy/kubernetes/examples/overlay ", "sed -i ")
    subprocess.run(["bash", "-euc", f"{copy}\n{point}"], cwd=checkout, check=True, timeout=10)
    mine = work / "my-llm"
    assert yaml.safe_load((mine / "kustomization.yaml").read_text())["bases"][0] == \
        "../vllm-autoscaler/deploy/kubernetes/base"
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(CLIENT_KEYS)
    control_plane.kubectl("-n", NAMESPACE, "create", "secret", "generic", SECRET,
                          f"--from-file=api-keys={keys}", f"--from-literal=vllm-api-key={VLLM_KEY}")
    return apply_kustomization(control_plane, mine)


@pytest.fixture(scope="module")
def overlay_kubelet(control_plane, user_deployment, applied, tmp_path_factory):
    """The test kubelet for the user's Deployment, once the overlay is applied."""
    yield from run_kubelet(control_plane, user_deployment, tmp_path_factory)


@pytest.fixture(scope="module")
def overlay_cluster(control_plane, user_deployment, applied, overlay_kubelet):
    kubeconfig = service_account_kubeconfig(control_plane, NAMESPACE)
    return Cluster(control_plane, user_deployment, overlay_kubelet, kubeconfig)


def get(cp, path):
    status, obj = cp.api("GET", path)
    assert status == 200, (path, obj)
    return obj


def test_every_object_is_in_the_overlay_namespace_with_the_patched_values(control_plane, applied):
    cp = control_plane
    kinds = {o["kind"] for o in applied}
    assert kinds == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "PodDisruptionBudget",
                     "Service", "Ingress"}
    assert {o["metadata"].get("namespace") for o in applied} == {NAMESPACE}
    collections = {"ServiceAccount": "/api/v1/namespaces/{}/serviceaccounts",
                   "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{}/roles",
                   "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{}/rolebindings",
                   "ConfigMap": "/api/v1/namespaces/{}/configmaps",
                   "Deployment": "/apis/apps/v1/namespaces/{}/deployments",
                   "PodDisruptionBudget": "/apis/{}/namespaces/{{}}/poddisruptionbudgets".format(
                       next(o["apiVersion"] for o in applied if o["kind"] == "PodDisruptionBudget")),
                   "Service": "/api/v1/namespaces/{}/services",
                   "Ingress": "/apis/networking.k8s.io/v1/namespaces/{}/ingresses"}
    # One object of each kind, as the apiserver has it now.
    live = {o["kind"]: get(cp, collections[o["kind"]].format(NAMESPACE) + "/" + o["metadata"]["name"])
            for o in applied}

    # The Role names the user's Deployment, and only it, where the base named `vllm`.
    rules = live["Role"]["rules"]
    assert [(r["resources"], r.get("resourceNames")) for r in rules] == [
        (["deployments/scale"], [DEPLOYMENT]), (["deployments"], [DEPLOYMENT]), (["pods"], None), (["events"], None),
        (["leases"], None), (["endpointslices"], None)]
    assert live["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "vllm-autoscaler", "namespace": NAMESPACE}]

    # The image, the overlay's config in the ConfigMap the Deployment mounts, the Secret.
    pod = live["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == f"{IMAGE['newName']}:{IMAGE['newTag']}"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == live["ConfigMap"]["metadata"]["name"]
    assert live["ConfigMap"]["data"] == {"config.yaml": CONFIG_TEXT}
    secret_volume = volumes["api-keys"]["secret"]
    assert (secret_volume["secretName"], secret_volume["items"]) == (SECRET, [{"key": "api-keys", "path": "api-keys"}])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert pathlib.PurePosixPath(CONFIG["auth"]["api_keys_file"]).parent == pathlib.PurePosixPath(mounts["api-keys"])
    assert {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "vllm-api-key"}}} \
        in container["env"]
    # What the base gave the proxy is still there: two replicas that coordinate, each named by its
    # pod (the overlay's env merged with the base's), kept one up through a drain.
    assert container["args"] == ["--config", "/etc/vllm-autoscaler/config.yaml"]
    assert live["Deployment"]["spec"]["replicas"] == 2
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}} \
        in container["env"]
    assert CONFIG["coordination"]["identity"] == "${POD_NAME}"
    assert live["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert live["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == \
        live["Deployment"]["spec"]["selector"]["matchLabels"]
    assert pod["serviceAccountName"] == "vllm-autoscaler"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    host = yaml.safe_load((OVERLAY / "ingress-patch.yaml").read_text())[0]["value"]
    assert [r["host"] for r in live["Ingress"]["spec"]["rules"]] == [host]
    assert live["Ingress"]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"


def test_the_service_account_may_scale_the_users_deployment_and_no_other(control_plane, applied):
    sa = f"system:serviceaccount:{NAMESPACE}:vllm-autoscaler"

    def can(*args):
        r = control_plane.kubectl("-n", NAMESPACE, "auth", "can-i", *args, f"--as={sa}", check=False)
        return r.stdout.strip()

    assert can("patch", f"deployments.apps/{DEPLOYMENT}", "--subresource=scale") == "yes"
    assert can("watch", f"deployments.apps/{DEPLOYMENT}") == "yes"
    assert can("patch", "deployments.apps/vllm", "--subresource=scale") == "no"
    assert can("list", "secrets") == "no"


def local_config(config_text: str, upstream: str, kubeconfig, keys_file) -> str:
    """The ConfigMap's config for the proxy binary run here instead of in its pod: loopback ports,
    the kubelet's service proxy for the Service, the ServiceAccount's kubeconfig for the in-cluster
    credentials (the scaler's and the coordination's), the Secret's keys at a local path. Everything else as applied."""
    config = yaml.safe_load(config_text)
    config["listen"] = "127.0.0.1:0"
    config["admin_listen"] = "127.0.0.1:0"
    config["auth"]["api_keys_file"] = str(keys_file)
    [backend] = config["backends"]
    backend["upstream"] = upstream
    backend["scaler"]["kubeconfig"] = str(kubeconfig)
    config["coordination"]["kubeconfig"] = str(kubeconfig)
    return yaml.safe_dump(config, sort_keys=False)


def test_the_proxy_serves_with_the_overlay_a_request_wakes_the_deployment(
        control_plane, applied, overlay_cluster, proxy, tmp_path):
    cp, cluster = control_plane, overlay_cluster
    [configmap] = [o for o in applied if o["kind"] == "ConfigMap"]
    config_text = get(cp, f"/api/v1/namespaces/{NAMESPACE}/configmaps/{configmap['metadata']['name']}")["data"][
        "config.yaml"]
    secret = get(cp, f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}")["data"]
    keys = tmp_path / "api-keys"
    keys.write_bytes(base64.b64decode(secret["api-keys"]))
    env = {"VLLM_API_KEY": base64.b64decode(secret["vllm-api-key"]).decode(), "POD_NAME": "vllm-autoscaler-0"}
    p = proxy(local_config(config_text, cluster.kubelet.service_url, cluster.proxy_kubeconfig, keys), env=env)

    # The setup checks find the Role and the Deployment as they must be.
    eventually(lambda: http("GET", p.admin_url + "/readyz")[0] == 200, timeout=15, what="/readyz 200")
    b = p.backend()
    assert (b["name"], b["state"], b["setup_problems"]) == (BACKEND["name"], "asleep", [])

    url = p.url + "/v1/chat/completions"
    # No key, or vLLM's own key: refused by the proxy, nothing woken.
    assert http("POST", url, chat(model=MODEL))[0] == 401
    assert http("POST", url, chat(model=MODEL), {"Authorization": f"Bearer {VLLM_KEY}"})[0] == 401
    assert cluster.deployment()["spec"].get("replicas", 0) == 0

    # A client's key: the Deployment is woken, the sim (which wants vLLM's key on /v1) answers.
    code, _, body = http("POST", url, chat(model=MODEL), {"Authorization": "Bearer client-key-b"}, timeout=90)
    assert code == 200, body
    assert json.loads(body)["model"] == MODEL
    last = json.loads(http("GET", cluster.kubelet.service_url + "/sim/last-request")[2])
    assert last["headers"]["authorization"] == f"Bearer {VLLM_KEY}"  # replaced, not added
    d = cluster.deployment()
    assert d["spec"]["replicas"] == BACKEND["scaler"]["replicas"] and d["status"].get("readyReplicas") == 1
    assert cluster.scale_patches() == 1  # by the proxy's ServiceAccount, in the audit log
    assert [e["reason"] for e in cluster.proxy_events()] == ["ScaledUp"]
    # The pod behind the user's Service, from its EndpointSlices (the config's scaler.service, the
    # Role's endpointslices rule).
    pods = eventually(lambda: [x for x in p.backend()["endpoints"]["pods"] if x["ready"]], timeout=10,
                      what="the pod in /status")
    assert [x["address"] for x in pods] == [f"{a}:{port}" for a, port in cluster.kubelet.endpoints()]
    assert {k: v for k, v in p.backend()["endpoints"].items() if k != "pods"} == {
        "service": SERVICE, "api": "discovery.k8s.io/v1beta1", "available": True, "problem": ""}

    # And back to zero, as after idle_timeout (15m in the overlay), by an admin sleep: the overlay
    # coordinates its replicas, so the sleep is proposed to them by the leader (this proxy alone),
    # once it has led for a lease_duration (15s).
    p.settle()
    lease = float(CONFIG["coordination"]["lease_duration"].rstrip("s"))

    def slept():
        code, _, body = http("POST", p.admin_url + f"/admin/backends/{BACKEND['name']}/sleep")
        assert code == 202, body
        time.sleep(1.0)
        return cluster.deployment()["spec"].get("replicas", 0) == 0

    eventually(slept, timeout=lease + 15, what="replicas 0")
    cluster.wait_no_pods(timeout=30)
    assert [e["reason"] for e in cluster.proxy_events()] == ["ScaledUp", "ScaledToZero"]
    assert cluster.scale_patches() == 2
    eventually(lambda: p.backend()["state"] == "asleep", timeout=10, what="the backend asleep")
