"""A real Kubernetes control plane for pytest fixtures (Python 3.11 stdlib + Debian's python3-yaml).

    from k8s.cluster import ControlPlane, apply_deploy, service_account_kubeconfig

    cp = ControlPlane().start(tmp_dir)                  # control-plane.sh start (etcd, apiserver, KCM)
    d = apply_deploy(cp, "llm", sim_args=["--model", "m", "--startup-delay", "1s"])
    kubeconfig = service_account_kubeconfig(cp, "llm")  # the proxy's own identity (its Role only)
    cp.kubectl("-n", "llm", "scale", "deployment", "vllm", "--replicas=1")
    status, scale = cp.api("GET", "/apis/apps/v1/namespaces/llm/deployments/vllm/scale")
    cp.stop()                                           # by the PIDs in DIR/pids

`apply_deploy` applies the real manifests of deploy/kubernetes (the proxy's ServiceAccount, Role,
RoleBinding, ConfigMap, Deployment, PodDisruptionBudget and Service) and deploy/kubernetes/vllm-example (the vLLM
Deployment and Service), rendered by `kubectl kustomize` and changed only where a test needs it: the
namespace, the vLLM container's args (vllm-sim flags, read by kubelet.py), its port, replicas and pod
template annotations. Nothing runs the proxy's own Deployment (its pod stays Pending): the test
kubelet only runs the pods of VLLM_SELECTOR, and the tests start the proxy binary themselves.
`apply_vllm_example` applies the vLLM example alone (renamed, in a namespace of the test's choice)
and `apply_kustomization` a kustomization as it is (`kubectl apply -k`), for an overlay's test.

Import it as `k8s.cluster` with test/support on sys.path (it uses support.py). kubectl comes from
PATH (1.32 on the development machine, Debian 12's kubernetes-client 1.20.2 on a fresh one;
scripts/setup installs it). Every control plane started here is stopped at interpreter exit at the
latest.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import urllib.parse

import yaml
from support import eventually

from .kubelet import SIMULATE_ANNOTATION, Kubelet, _Api, _read_env

__all__ = [
    "Cluster",
    "ControlPlane",
    "Deploy",
    "KubectlError",
    "VLLM_SELECTOR",
    "apply_deploy",
    "apply_kustomization",
    "apply_vllm_example",
    "create_namespace",
    "service_account_kubeconfig",
    "service_account_token",
]

REPO = pathlib.Path(__file__).resolve().parents[3]
CONTROL_PLANE_SH = pathlib.Path(__file__).resolve().with_name("control-plane.sh")
DEPLOY_DIR = REPO / "deploy" / "kubernetes"
VLLM_EXAMPLE_DIR = DEPLOY_DIR / "vllm-example"
VLLM_SELECTOR = "app.kubernetes.io/name=vllm"  # the vLLM pods' label (vllm-example/deployment.yaml)


class KubectlError(RuntimeError):
    def __init__(self, args: list[str], result: subprocess.CompletedProcess):
        self.result = result
        super().__init__(f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr.strip()}")


def _kubectl_binary() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise RuntimeError("no kubectl on PATH: scripts/setup installs one (Debian's kubernetes-client)")
    return path


# What the audit log records with ControlPlane.start(audit=True): the writes of a Deployment's Scale
# (who scaled what, when), nothing else.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    verbs: ["patch", "update"]
    resources:
      - group: apps
        resources: ["deployments/scale"]
  - level: None
"""


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager of control-plane.sh, in one directory."""

    def __init__(self):
        self.dir: pathlib.Path | None = None
        self.apiserver_extra_args = ""
        self.audit_log: pathlib.Path | None = None
        self._api: _Api | None = None

    # --- lifecycle ---
    def start(self, dir, apiserver_extra_args: str = "", audit: bool = False) -> "ControlPlane":
        """`control-plane.sh start DIR` (9-11 s); returns self. Stops whatever started when it fails.
        `apiserver_extra_args`: kube-apiserver flags (split on spaces), kept for restart_apiserver().
        `audit`: the apiserver writes AUDIT_POLICY's events to DIR/audit.log (audit_events())."""
        self.dir = pathlib.Path(dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.apiserver_extra_args = apiserver_extra_args
        if audit:
            policy = self.dir / "audit-policy.yaml"
            policy.write_text(AUDIT_POLICY)
            self.audit_log = self.dir / "audit.log"
            # The log backend's default (blocking) mode writes each event as its request completes,
            # which may be just after the client has the answer.
            self.apiserver_extra_args = (f"{apiserver_extra_args} --audit-policy-file={policy} "
                                         f"--audit-log-path={self.audit_log}").strip()
        _live.add(self)
        try:
            self._script("start", timeout=300)
            env = self.env
            self._api = _Api(env["KUBE_SERVER"], env["KUBE_CA_FILE"], env["KUBE_ADMIN_TOKEN"])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """`control-plane.sh stop DIR`: each process by its PID (SIGTERM, then SIGKILL). Idempotent."""
        if self.dir is not None and (self.dir / "pids").exists():
            self._script("stop", timeout=120)
        _live.discard(self)

    def restart_apiserver(self) -> None:
        """Stops kube-apiserver and starts it again on the same port with the same flags (~8 s)."""
        self._script("restart-apiserver", timeout=180)

    def pids(self) -> dict[str, int]:
        """name -> PID of the processes running now (from DIR/pids)."""
        out = {}
        path = self.dir / "pids"
        if path.exists():
            for line in path.read_text().splitlines():
                name, _, pid = line.partition(" ")
                if pid.strip():
                    out[name] = int(pid)
        return out

    def audit_events(self) -> list[dict]:
        """The audit log's events so far (start(audit=True)), oldest first."""
        if self.audit_log is None:
            raise RuntimeError("no audit log: ControlPlane().start(dir, audit=True)")
        try:
            lines = self.audit_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def log(self, name: str) -> str:
        """DIR/logs/<name>.log (etcd, kube-apiserver, kube-controller-manager)."""
        try:
            return (self.dir / "logs" / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _script(self, command: str, timeout: float) -> None:
        env = dict(os.environ, APISERVER_EXTRA_ARGS=self.apiserver_extra_args)
        r = subprocess.run(["bash", str(CONTROL_PLANE_SH), command, str(self.dir)], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"control-plane.sh {command} {self.dir} exited {r.returncode}:\n"
                               f"{r.stderr.strip()}")

    # --- access ---
    @property
    def env(self) -> dict[str, str]:
        """DIR/env: KUBE_SERVER, KUBE_CA_FILE, KUBE_ADMIN_TOKEN, KUBECONFIG_ADMIN, ETCD_ENDPOINT, ..."""
        return _read_env(self.dir)

    @property
    def kubeconfig(self) -> pathlib.Path:
        """The admin (system:masters) kubeconfig."""
        return self.dir / "kubeconfig"

    @property
    def server(self) -> str:
        return self.env["KUBE_SERVER"]

    @property
    def ca_file(self) -> pathlib.Path:
        return pathlib.Path(self.env["KUBE_CA_FILE"])

    def kubectl(self, *args, input: str | None = None, check: bool = True, timeout: float = 60,
                kubeconfig=None) -> subprocess.CompletedProcess:
        """kubectl --kubeconfig DIR/kubeconfig ARGS (as admin, or with `kubeconfig`); stdout and
        stderr as text in the result. With `check`, a non-zero exit raises KubectlError (with
        kubectl's stderr)."""
        argv = [str(a) for a in args]
        config = str(kubeconfig or self.kubeconfig)
        r = subprocess.run([_kubectl_binary(), "--kubeconfig", config, *argv], input=input,
                           capture_output=True, text=True, timeout=timeout,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise KubectlError(argv, r)
        return r

    def api(self, method: str, path: str, body=None, *, token: str | None = None,
            content_type: str | None = None, timeout: float = 10) -> tuple[int, dict | str]:
        """One request to the apiserver, as admin or with `token`: (HTTP status, body parsed as JSON).
        A PATCH body is a merge patch unless `content_type` says otherwise."""
        if content_type is None:
            content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        return self._api.call(method, path, body, content_type, timeout, token)


_live: set[ControlPlane] = set()


@atexit.register
def _stop_leftovers() -> None:
    for cp in list(_live):
        try:
            cp.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


# --- the deploy/ manifests ---


@dataclasses.dataclass
class Deploy:
    """What apply_deploy applied."""

    namespace: str
    deployment: str  # the vLLM Deployment
    selector: str  # label selector of its pods (the test kubelet's)
    objects: list[dict]  # every object applied, as sent

    def get(self, kind: str, name: str | None = None) -> dict:
        """The applied object of `kind` (and `name`, when several have that kind)."""
        found = [o for o in self.objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
        if len(found) != 1:
            raise KeyError(f"{len(found)} applied objects of kind {kind} named {name}")
        return found[0]

    @property
    def proxy_config(self) -> str:
        """The proxy's config.yaml, as in its ConfigMap."""
        return self.get("ConfigMap")["data"]["config.yaml"]


def render(kustomize_dir: pathlib.Path) -> list[dict]:
    """`kubectl kustomize DIR` as a list of objects (no server needed)."""
    r = subprocess.run([_kubectl_binary(), "kustomize", str(kustomize_dir)], capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise KubectlError(["kustomize", str(kustomize_dir)], r)
    return [o for o in yaml.safe_load_all(r.stdout) if o]


def _vllm_objects(objects: list[dict], deployment_name: str, sim_args: list[str], container_port: int | None,
                  replicas: int, annotations: dict | None) -> None:
    """Turns the example vLLM Deployment into one the test kubelet runs (in place)."""
    dep = next(o for o in objects if o["kind"] == "Deployment")
    dep["metadata"]["name"] = deployment_name
    spec = dep["spec"]
    spec["replicas"] = replicas
    template = spec["template"]
    if annotations:
        template["metadata"].setdefault("annotations", {}).update(annotations)
    container = template["spec"]["containers"][0]
    # kubelet.py reads the first container's args as vllm-sim flags and ignores the rest (image, command).
    container["args"] = [str(a) for a in sim_args]
    if container_port is not None:
        # The probes and the Service's targetPort name the port (`http`), so only its number changes.
        container["ports"][0]["containerPort"] = int(container_port)


def _proxy_objects(objects: list[dict], deployment_name: str) -> None:
    """Points the proxy's Role and config at `deployment_name` (in place)."""
    if deployment_name == "vllm":
        return
    for o in objects:
        if o["kind"] == "Role":
            for rule in o["rules"]:
                if "resourceNames" in rule:
                    rule["resourceNames"] = [deployment_name if n == "vllm" else n for n in rule["resourceNames"]]
        elif o["kind"] == "ConfigMap" and "config.yaml" in o.get("data", {}):
            o["data"]["config.yaml"] = re.sub(r"(?m)^(\s*deployment:\s*)vllm\b", rf"\g<1>{deployment_name}",
                                              o["data"]["config.yaml"])


def _matches(labels: dict, selector: str) -> bool:
    """Equality-based label selector `k=v,k2=v2` against `labels`."""
    return all(labels.get(k) == v for k, _, v in (term.partition("=") for term in selector.split(",")))


def apply_deploy(cp: ControlPlane, namespace: str, deployment_name: str = "vllm",
                 sim_args=("--model", "sim-model"), container_port: int | None = None,
                 replicas: int = 0, annotations: dict | None = None) -> Deploy:
    """Creates `namespace` and applies deploy/kubernetes + deploy/kubernetes/vllm-example into it
    (see the module doc), with `kubectl apply` as admin. The vLLM Deployment is named
    `deployment_name` (the Role's resourceNames and the proxy's config follow), runs vllm-sim with
    `sim_args` on `container_port` (default: the manifest's 8000) and has `replicas`; `annotations`
    go on its pod template (e.g. kubelet.SIMULATE_ANNOTATION). Returns once applied. The vLLM pods
    run as the namespace's `default` ServiceAccount, so that is waited for (with its token) first:
    1.20 refuses a pod whose ServiceAccount does not exist yet (403 "error looking up service
    account"), and the ReplicaSet controller would retry only after a back-off."""
    proxy = render(DEPLOY_DIR)
    vllm = render(VLLM_EXAMPLE_DIR)
    _vllm_objects(vllm, deployment_name, list(sim_args), container_port, replicas, annotations)
    _proxy_objects(proxy, deployment_name)
    objects = proxy + vllm
    for o in objects:
        o["metadata"]["namespace"] = namespace
        for subject in o.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace
        if o["kind"] == "Deployment" and o["metadata"]["name"] != deployment_name:
            labels = o["spec"]["template"]["metadata"].get("labels") or {}
            assert not _matches(labels, VLLM_SELECTOR), f"{o['metadata']['name']} pods would run in the kubelet"

    create_namespace(cp, namespace)
    apply_objects(cp, objects)
    return Deploy(namespace=namespace, deployment=deployment_name, selector=VLLM_SELECTOR, objects=objects)


def create_namespace(cp: ControlPlane, namespace: str) -> None:
    """Applies the Namespace and waits for its `default` ServiceAccount's token, which pods need
    (see apply_deploy)."""
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    cp.kubectl("apply", "-f", "-", input=json.dumps(ns))
    service_account_token(cp, namespace, "default")


def apply_vllm_example(cp: ControlPlane, namespace: str, deployment_name: str = "vllm",
                       service_name: str | None = None, sim_args=("--model", "sim-model"),
                       replicas: int = 0) -> Deploy:
    """Creates `namespace` and applies deploy/kubernetes/vllm-example alone into it, as a user's own
    vLLM Deployment named `deployment_name` (and its Service named `service_name`, default: the
    same), running vllm-sim with `sim_args`, at `replicas`. No proxy object is applied."""
    objects = render(VLLM_EXAMPLE_DIR)
    _vllm_objects(objects, deployment_name, list(sim_args), None, replicas, None)
    for o in objects:
        o["metadata"]["namespace"] = namespace
        if o["kind"] == "Service":
            o["metadata"]["name"] = service_name or deployment_name
    create_namespace(cp, namespace)
    apply_objects(cp, objects)
    return Deploy(namespace=namespace, deployment=deployment_name, selector=VLLM_SELECTOR, objects=objects)


def apply_kustomization(cp: ControlPlane, kustomize_dir) -> list[dict]:
    """The kustomization as it is, applied as admin (`kubectl kustomize DIR`, then `kubectl apply`,
    which is what `kubectl apply -k DIR` does, in the API versions the server serves: see
    served_versions); returns its objects as rendered (generated names included)."""
    objects = render(pathlib.Path(kustomize_dir))
    apply_objects(cp, objects)
    return objects


def served_versions(cp: ControlPlane, objects: list[dict]) -> None:
    """The PodDisruptionBudget as a 1.20 apiserver serves it (in place): the manifests ship
    policy/v1, which exists from 1.21 on; 1.20 has policy/v1beta1, with the same fields (the test
    control plane is 1.20; pdb.yaml tells users of such a cluster to do the same)."""
    if cp.api("GET", "/apis/policy/v1")[0] == 200:
        return
    for o in objects:
        if o["kind"] == "PodDisruptionBudget" and o["apiVersion"] == "policy/v1":
            o["apiVersion"] = "policy/v1beta1"


def apply_objects(cp: ControlPlane, objects: list[dict]) -> None:
    """`kubectl apply` of `objects` as admin, in the versions the server serves."""
    served_versions(cp, objects)
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


# --- the proxy's credentials ---


def service_account_token(cp: ControlPlane, namespace: str, sa: str = "vllm-autoscaler",
                          timeout: float = 30) -> str:
    """The token of the ServiceAccount's token Secret, which 1.20's token controller creates (and
    lists in the ServiceAccount's `secrets`) a moment after the ServiceAccount; waits for it."""
    base = f"/api/v1/namespaces/{namespace}"

    def token() -> str | None:
        status, obj = cp.api("GET", f"{base}/serviceaccounts/{urllib.parse.quote(sa)}")
        if status != 200:
            return None
        for ref in obj.get("secrets") or []:
            status, secret = cp.api("GET", f"{base}/secrets/{urllib.parse.quote(ref['name'])}")
            if status == 200 and secret.get("type") == "kubernetes.io/service-account-token" \
                    and (secret.get("data") or {}).get("token"):
                return base64.b64decode(secret["data"]["token"]).decode()
        return None

    return eventually(token, timeout, f"the token of ServiceAccount {namespace}/{sa}")


def service_account_kubeconfig(cp: ControlPlane, namespace: str, sa: str = "vllm-autoscaler",
                               path=None) -> pathlib.Path:
    """Writes a kubeconfig (server, CA data, the ServiceAccount's token, `namespace` as the context's
    namespace) to `path` (default DIR/<sa>.<namespace>.kubeconfig), mode 0600; returns the path."""
    token = service_account_token(cp, namespace, sa)
    path = pathlib.Path(path) if path is not None else cp.dir / f"{sa}.{namespace}.kubeconfig"
    ca_data = base64.b64encode(cp.ca_file.read_bytes()).decode()
    text = f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {cp.server}
    certificate-authority-data: {ca_data}
users:
- name: {sa}
  user:
    token: {token}
contexts:
- name: {sa}
  context:
    cluster: test
    user: {sa}
    namespace: {namespace}
current-context: {sa}
"""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


# --- what a test of the proxy looks at ---


class Cluster:
    """The vLLM Deployment of `deploy` on `control_plane`, its pods run by `kubelet`: what a test of
    the proxy does (as admin) and looks at. `proxy_kubeconfig`: the proxy's credentials."""

    def __init__(self, control_plane: ControlPlane, deploy: Deploy, kubelet: Kubelet, proxy_kubeconfig=None,
                 proxy_account: str = "vllm-autoscaler"):
        self.control_plane = control_plane
        self.deploy = deploy
        self.kubelet = kubelet
        self.proxy_kubeconfig = proxy_kubeconfig
        self.namespace = deploy.namespace
        self.deployment_name = deploy.deployment
        self.proxy_user = f"system:serviceaccount:{deploy.namespace}:{proxy_account}"

    def kubectl(self, *args, **kw) -> subprocess.CompletedProcess:
        """ControlPlane.kubectl in the namespace."""
        return self.control_plane.kubectl("-n", self.namespace, *args, **kw)

    def deployment(self) -> dict:
        status, obj = self.control_plane.api("GET", f"/apis/apps/v1/namespaces/{self.namespace}/deployments/"
                                                    f"{self.deployment_name}")
        assert status == 200, obj
        return obj

    def pods(self) -> list[str]:
        """Names of the Deployment's pods in the API (terminating ones too), sorted."""
        q = urllib.parse.urlencode({"labelSelector": self.deploy.selector})
        status, obj = self.control_plane.api("GET", f"/api/v1/namespaces/{self.namespace}/pods?{q}")
        assert status == 200, obj
        return sorted(p["metadata"]["name"] for p in obj["items"])

    def scale(self, replicas: int) -> None:
        """kubectl scale, as someone other than the proxy would."""
        self.kubectl("scale", "deployment", self.deployment_name, f"--replicas={replicas}")

    def wait_no_pods(self, timeout: float = 60) -> None:
        """Until no pod of the Deployment is left in the API, in the kubelet or as a vllm-sim."""
        eventually(lambda: not self.pods() and not self.kubelet.pods() and not self.kubelet.sim_pids(),
                   timeout, "no pod left")

    def proxy_token(self) -> str:
        """The bearer token of the proxy's ServiceAccount (from proxy_kubeconfig)."""
        return yaml.safe_load(self.proxy_kubeconfig.read_text())["users"][0]["user"]["token"]

    @contextlib.contextmanager
    def role_without(self, resources: list[str], verb: str):
        """The proxy's Role without `verb` in its rule for `resources` (as the rule lists them)
        while the block runs, and the shipped Role again after it, whatever the block did. The API
        server may take a moment to enforce either (see test_cluster.may)."""
        path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{self.namespace}/roles/vllm-autoscaler"
        _, shipped = self.control_plane.api("GET", path)
        broken = json.loads(json.dumps(shipped))
        for rule in broken["rules"]:
            if rule["resources"] == resources:
                rule["verbs"] = [v for v in rule["verbs"] if v != verb]
        status, obj = self.control_plane.api("PUT", path, broken)
        assert status == 200, obj
        try:
            yield
        finally:
            shipped["metadata"].pop("resourceVersion", None)
            status, obj = self.control_plane.api("PUT", path, shipped)
            assert status == 200, obj

    def set_simulate(self, mode: str | None) -> None:
        """Sets kubelet.SIMULATE_ANNOTATION (crashloop, imagepull, unschedulable) on the pod template,
        or removes it (None). A changed template is a new ReplicaSet: pods made from now on have it."""
        patch = {"spec": {"template": {"metadata": {"annotations": {SIMULATE_ANNOTATION: mode}}}}}
        status, obj = self.control_plane.api(
            "PATCH", f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.deployment_name}", patch)
        assert status == 200, obj

    def proxy_events(self, reason: str | None = None) -> list[dict]:
        """The namespace's Events from the proxy (source.component vllm-autoscaler), with `reason`
        if given, in the order of their last write (creation or count update)."""
        status, obj = self.control_plane.api("GET", f"/api/v1/namespaces/{self.namespace}/events")
        assert status == 200, obj
        events = [e for e in obj["items"] if (e.get("source") or {}).get("component") == "vllm-autoscaler"
                  and reason in (None, e.get("reason"))]
        return sorted(events, key=lambda e: int(e["metadata"]["resourceVersion"]))

    def scale_patches(self) -> int:
        """PATCHes of the Deployment's Scale by the proxy's ServiceAccount, answered or refused, as
        the apiserver's audit log records them (ControlPlane.start(audit=True))."""
        n = 0
        for e in self.control_plane.audit_events():
            ref = e.get("objectRef") or {}
            if (e.get("stage") == "ResponseComplete" and e.get("verb") == "patch"
                    and (e.get("user") or {}).get("username") == self.proxy_user
                    and (ref.get("resource"), ref.get("subresource")) == ("deployments", "scale")
                    and (ref.get("namespace"), ref.get("name")) == (self.namespace, self.deployment_name)):
                n += 1
        return n
