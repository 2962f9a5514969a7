"""pytest setup for the Kubernetes tests: a real control plane (etcd, kube-apiserver and
kube-controller-manager 1.20 from test/support/k8s/control-plane.sh) per test file, the manifests of
deploy/kubernetes applied to it, and the test kubelet running the vLLM pods as vllm-sim processes
behind its service proxy. Everything is stopped by PID when the file's tests are done.

Per test file (module scope), in dependency order:
    control_plane      k8s.cluster.ControlPlane, started in a temporary directory with the audit log
                       on; the test file may set APISERVER_EXTRA_ARGS (kube-apiserver flags)
    deploy             k8s.cluster.Deploy: namespace NAMESPACE with deploy/kubernetes and
                       deploy/kubernetes/vllm-example applied (vLLM Deployment `vllm`, replicas 0);
                       the test file may set SIM_ARGS (vllm-sim flags of the vLLM container) and
                       POD_ANNOTATIONS (its pod template's annotations)
    kubelet            k8s.kubelet.Kubelet for the vLLM pods, with its service proxy
                       (kubelet.service_url: the proxy's upstream); PROBE_PERIOD (s, default 1)
    proxy_kubeconfig   path of a kubeconfig with the vllm-autoscaler ServiceAccount's token
    kubernetes_config  factory: kubernetes_config(**backend_yaml keywords, top="") -> proxy YAML
    cluster            k8s.cluster.Cluster: all of the above in one object, with what a test of the
                       proxy does and looks at (scale, pods, Events, PATCHes in the audit log, ...)
Per test:
    procs, proxy       as in the integration tests: proxy(yaml_text, *args) -> Proxy, stopped after
                       the test and checked for sanitizer reports
"""

import pathlib
import sys

import pytest

_TEST = pathlib.Path(__file__).resolve().parents[1]
if str(_TEST / "support") not in sys.path:
    sys.path.insert(0, str(_TEST / "support"))

import support  # noqa: E402
from fixtures import procs, proxy  # noqa: E402,F401  (shared fixtures)
import proxy as proxy_support  # noqa: E402
from k8s.cluster import Cluster, ControlPlane, apply_deploy, service_account_kubeconfig  # noqa: E402
from k8s.kubelet import Kubelet  # noqa: E402

NAMESPACE = "llm"  # as in deploy/kubernetes; each test file has a control plane of its own
MODEL = "sim-model"
SIM_ARGS = ["--model", MODEL, "--itl", "1ms"]  # default vllm-sim flags of the vLLM container


@pytest.fixture(scope="module")
def control_plane(request, tmp_path_factory):
    cp = ControlPlane().start(tmp_path_factory.mktemp("control-plane"),
                              getattr(request.module, "APISERVER_EXTRA_ARGS", ""), audit=True)
    yield cp
    cp.stop()


@pytest.fixture(scope="module")
def deploy(request, control_plane):
    return apply_deploy(control_plane, NAMESPACE,
                        sim_args=getattr(request.module, "SIM_ARGS", SIM_ARGS),
                        annotations=getattr(request.module, "POD_ANNOTATIONS", None))


def run_kubelet(control_plane, deploy, tmp_path_factory, probe_period: float = 1.0):
    """Generator for a module fixture: the test kubelet (probe every `probe_period` s) with its
    service proxy for the pods of `deploy`. At teardown every vllm-sim it started is stopped, and
    none may have printed a sanitizer report."""
    log_dir = tmp_path_factory.mktemp("kubelet")
    kl = Kubelet(control_plane.dir, deploy.namespace, deploy.selector, support.BIN_DIR / "vllm-sim",
                 probe_period=probe_period, log_dir=log_dir, service_proxy=True).start()
    yield kl
    kl.stop()
    assert kl.sim_pids() == []
    reports = support.sanitizer_reports({p.name: p.read_text(errors="replace") for p in log_dir.glob("*.log")})
    assert not reports, "sanitizer report:\n" + "\n".join(reports)


@pytest.fixture(scope="module")
def kubelet(request, control_plane, deploy, tmp_path_factory):
    """The test kubelet for the vLLM Deployment of `deploy` (run_kubelet); the test file may set
    PROBE_PERIOD (seconds, default 1)."""
    yield from run_kubelet(control_plane, deploy, tmp_path_factory,
                           getattr(request.module, "PROBE_PERIOD", 1.0))


@pytest.fixture(scope="module")
def proxy_kubeconfig(control_plane, deploy):
    return service_account_kubeconfig(control_plane, deploy.namespace)


@pytest.fixture(scope="module")
def kubernetes_config(deploy, kubelet, proxy_kubeconfig):
    """Factory: a proxy config with one backend `vllm` for MODEL whose kubernetes scaler scales the
    vLLM Deployment (as the vllm-autoscaler ServiceAccount) and whose upstream is the kubelet's
    service proxy. Keywords go to proxy.kubernetes_backend_yaml (idle, wake, replicas, extra, ...),
    `top` to proxy.config_yaml."""

    def make(*, top: str = "", models=(MODEL,), **backend) -> str:
        entry = proxy_support.kubernetes_backend_yaml(
            "vllm", kubelet.service_url, list(models), namespace=deploy.namespace,
            deployment=deploy.deployment, kubeconfig=proxy_kubeconfig, **backend)
        return proxy_support.config_yaml(entry, top=top)

    return make


@pytest.fixture(scope="module")
def cluster(control_plane, deploy, kubelet, proxy_kubeconfig):
    return Cluster(control_plane, deploy, kubelet, proxy_kubeconfig)
