"""The binary as an operator meets it: bad configs exit 2 listing every problem by key path,
--check-config and --print-config (secrets masked), the single-backend shorthand flags, and the
precedence flags > environment > YAML."""

import json
import os
import subprocess
import time

from proxy import sim_command
from support import BIN_DIR, Proc, eventually, free_port, http, metrics, sim_last_request

BIN = BIN_DIR / "vllm-autoscaler"


def run(*args, env=None, timeout=15):
    """Runs the proxy binary to completion (config checks); returns the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_AUTOSCALER_")}
    full_env.update(env or {})
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=full_env)


def problems(done):
    """The problem lines of an 'invalid configuration' report on stderr."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert lines[0] == "vllm-autoscaler: invalid configuration:", done.stderr
    assert all(line.startswith("  ") for line in lines[1:])
    return [line.strip() for line in lines[1:]]


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def start(procs, *args, env=None):
    """Starts the proxy with `args`; waits for its `listening` line; returns the Proc with
    .public_port/.admin_port/.url/.admin_url."""
    full_env = {k: "" for k in os.environ if k.startswith("VLLM_AUTOSCALER_")}
    full_env.update(env or {})
    p = Proc([BIN, *args], env=full_env, name="vllm-autoscaler")
    procs.append(p)
    p.wait_for_output('"msg":"listening"', timeout=15)
    line = next(json.loads(l) for l in p.output().splitlines() if '"msg":"listening"' in l)
    p.public_port, p.admin_port = line["public_port"], line["admin_port"]
    p.url = f"http://127.0.0.1:{p.public_port}"
    p.admin_url = f"http://127.0.0.1:{p.admin_port}"
    return p


GOOD = """
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
backends:
  - name: sim
    models: ["sim-model"]
    upstream: http://127.0.0.1:{port}
    idle_timeout: 90s
"""


def test_a_bad_config_exits_2_listing_every_problem_with_its_key_path(tmp_path):
    path = write(tmp_path, """
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
colour: blue
limits:
  header_timeout: 10 seconds
  max_conections: 5
backends:
  - name: a
    models: ["m1"]
    idle_timeout: 5x
    scaler: { type: process, command: ["vllm-sim"] }
  - name: b
    models: ["m2"]
    upstream: http://127.0.0.1:9
    wake_timeout: soon
    health: { path: /health, intervall: 1s }
""")
    expected = [
        "colour: unknown key",
        'limits.header_timeout: bad duration "10 seconds" (use ms, s, m or h)',
        "limits.max_conections: unknown key",
        'backends[0].idle_timeout: bad duration "5x" (use ms, s, m or h)',
        'backends[1].wake_timeout: bad duration "soon" (use ms, s, m or h)',
        "backends[1].health.intervall: unknown key",
        "backends[0].upstream: required",
    ]
    for mode in ([], ["--check-config"], ["--print-config"]):
        done = run("--config", path, *mode)
        assert sorted(problems(done)) == sorted(expected)
        assert done.stdout == ""


def test_problems_from_flags_and_environment_name_their_source(tmp_path):
    path = write(tmp_path, GOOD.format(port=9) + "    health: { path: /health }\n")
    done = run("--config", path, "--listen", "nowhere", "--wake-timeout", "0s",
               env={"VLLM_AUTOSCALER_IDLE_TIMEOUT": "forever",
                    "VLLM_AUTOSCALER_ADMIN_LISTEN": "127.0.0.1:99999"})
    found = problems(done)
    assert 'VLLM_AUTOSCALER_IDLE_TIMEOUT: bad duration "forever" (use ms, s, m or h)' in found
    assert any(p.startswith("listen (from --listen): bad address") for p in found), found
    assert any(p.startswith("admin_listen (from VLLM_AUTOSCALER_ADMIN_LISTEN): bad address")
               for p in found), found
    assert "backends[0].wake_timeout (from --wake-timeout): must be greater than 0" in found
    assert len(found) == 4, found


def test_unreadable_or_unparsable_files_and_unset_variables_exit_2(tmp_path):
    assert problems(run("--config", tmp_path / "missing.yaml"))[0].startswith(
        f"config: cannot read {tmp_path / 'missing.yaml'}")
    broken = write(tmp_path, "backends: [\n  - name: x\n", "broken.yaml")
    [problem] = problems(run("--config", broken))
    assert problem.startswith(f"{broken}:")  # file:line:column of the YAML error
    keys = write(tmp_path, GOOD.format(port=9) + 'auth: { api_keys: ["${VA_UNSET_KEY_1}"] }\n',
                 "keys.yaml")
    assert problems(run("--config", keys)) == [
        "auth.api_keys[0]: environment variable VA_UNSET_KEY_1 is not set"]
    empty = write(tmp_path, "", "empty-keys")
    assert problems(run("--config", keys, "--api-key-file", empty,
                        env={"VA_UNSET_KEY_1": "k"})) == [
        f"auth.api_keys_file (from --api-key-file): {empty} contains no keys"]


def test_check_config_accepts_a_good_file(tmp_path):
    path = write(tmp_path, GOOD.format(port=8001))
    done = run("--config", path, "--check-config")
    assert (done.returncode, done.stdout, done.stderr) == (0, "configuration is valid\n", "")
    # Through the environment variable that names the file, too.
    done = run("--check-config", env={"VLLM_AUTOSCALER_CONFIG": str(path)})
    assert done.returncode == 0, done.stderr
    # And named by --check-config (and --print-config) itself, as the docs write it.
    done = run("--check-config", path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "configuration is valid\n", "")
    done = run("--print-config", path)
    assert done.returncode == 0 and "port" not in done.stderr, done.stderr
    assert done.stdout == run("--config", path, "--print-config").stdout
    bad = write(tmp_path, "backends: []\nthreads: zero\n", "bad.yaml")
    done = run("--check-config", bad)
    assert done.returncode == 2 and "threads" in done.stderr, done.stderr
    # Two different files named is a mistake, not a choice.
    done = run("--check-config", bad, "--config", path)
    assert done.returncode == 2 and "two config files" in done.stderr, done.stderr


def test_print_config_masks_every_secret_and_loads_back(tmp_path):
    secrets = {f"SECRET_{i}": f"s3cr3t-{i}-{os.urandom(4).hex()}" for i in range(8)}
    keys_file = write(tmp_path, secrets["SECRET_7"] + "\n", "api-keys")
    path = write(tmp_path, f"""
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
auth:
  api_keys: ["${{SECRET_0}}", "{secrets['SECRET_1']}"]
  api_keys_file: {keys_file}
backends:
  - name: sim
    models: ["sim-model"]
    upstream: http://127.0.0.1:8001
    health:
      headers: {{ Authorization: "Bearer {secrets['SECRET_2']}", X-Api-Key: "{secrets['SECRET_3']}",
                  X-Trace: visible-header }}
    scaler:
      type: process
      command: ["vllm-sim", "--api-key", "{secrets['SECRET_4']}", "--token={secrets['SECRET_5']}",
                "--model", "visible-arg"]
      env: {{ HF_TOKEN: "{secrets['SECRET_6']}", HF_HOME: /visible/home }}
""")
    env = {"SECRET_0": secrets["SECRET_0"]}
    done = run("--config", path, "--print-config", env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for name, value in secrets.items():
        assert value not in out, f"{name} leaked:\n{out}"
    for visible in ("visible-header", "visible-arg", "/visible/home", str(keys_file), "sim-model",
                    "idle_timeout: 5m", "wake_timeout: 2m", "max_connections: 10000"):
        assert visible in out, visible
    assert out.count("***") >= 7, out

    # The output is a complete config: it loads back, and prints the same again.
    printed = write(tmp_path, out, "printed.yaml")
    assert run("--config", printed, "--check-config").returncode == 0
    assert run("--config", printed, "--print-config").stdout == out


def test_shorthand_flags_run_a_static_proxy_to_a_running_sim(procs, sim):
    s = sim(model="m")
    p = start(procs, "--upstream", s.url, "--model", "m", "--listen", "127.0.0.1:0",
              "--admin-listen", "127.0.0.1:0", "--idle-timeout", "1h")
    # The running upstream is adopted at start (a health probe), without any request.
    deadline = time.monotonic() + 20
    while json.loads(http("GET", p.admin_url + "/status")[2])["backends"][0]["state"] != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    status, headers, body = http("POST", p.url + "/v1/chat/completions", chat)
    assert status == 200 and json.loads(body)["model"] == "m"
    assert "server-timing" not in headers  # nothing waited for a wake
    status, _, body = http("POST", p.url + "/v1/chat/completions", {**chat, "model": "other"})
    assert status == 404 and json.loads(body)["error"]["code"] == 404
    # No model: the single shorthand backend is the default.
    assert http("POST", p.url + "/v1/chat/completions", {"messages": chat["messages"]})[0] == 200
    status, _, body = http("GET", p.admin_url + "/status")
    [backend] = json.loads(body)["backends"]
    assert (backend["name"], backend["state"], backend["wakes"]) == ("default", "ready", 0)
    assert metrics(p.admin_url)['vllm_autoscaler_requests_total{backend="default",code="200"}'] == 2


def test_upstream_alone_serves_every_model_the_backend_has(procs, sim):
    """`--upstream URL` with no --model: OpenAI clients always send "model", and the one backend
    that lists none takes each of them to the backend, which answers a model it lacks itself."""
    s = sim(model="served-name")
    p = start(procs, "--upstream", s.url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")
    chat = {"model": "served-name", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    status, _, body = http("POST", p.url + "/v1/chat/completions", chat)
    assert status == 200 and json.loads(body)["model"] == "served-name", body
    status, _, body = http("POST", p.url + "/v1/chat/completions", {**chat, "model": "other"})
    assert status == 404, body
    # The backend's own answer: the request reached it.
    seen = sim_last_request(s.url)
    assert (seen["method"], seen["body_bytes"]) == ("POST", len(json.dumps({**chat, "model": "other"})))
    m = metrics(p.admin_url)
    assert m['vllm_autoscaler_requests_total{backend="default",code="404"}'] == 1
    assert m.get('vllm_autoscaler_rejected_requests_total{backend="none",reason="unknown_model"}', 0) == 0
    # /v1/models lists what the backend listed itself when it was last up.
    def listed():
        status, _, body = http("GET", p.url + "/v1/models")
        assert status == 200
        return [(m["id"], m["backend"]) for m in json.loads(body)["data"]]
    assert eventually(lambda: listed() == [("served-name", "default")] and listed())


def test_process_command_shorthand_starts_the_backend_on_demand(procs):
    port = free_port()
    command = " ".join(json.loads(sim_command(port, "m", "--startup-delay", "200ms")))
    p = start(procs, "--upstream", f"http://127.0.0.1:{port}", "--model", "m",
              "--process-command", command, "--listen", "127.0.0.1:0",
              "--admin-listen", "127.0.0.1:0")
    status, _, body = http("GET", p.admin_url + "/status")
    assert json.loads(body)["backends"][0]["state"] == "asleep"
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    status, headers, _ = http("POST", p.url + "/v1/chat/completions", chat)
    assert status == 200 and "wake;dur=" in headers["server-timing"]
    assert p.output().count('"msg":"backend process started"') == 1


def test_environment_overrides_yaml_and_flags_override_environment(procs, tmp_path):
    yaml_port, env_port, flag_port = free_port(), free_port(), free_port()
    path = write(tmp_path, GOOD.format(port=8001).replace("listen: 127.0.0.1:0\nadmin",
                                                          f"listen: 127.0.0.1:{yaml_port}\nadmin"))
    env = {"VLLM_AUTOSCALER_LISTEN": f"127.0.0.1:{env_port}",
           "VLLM_AUTOSCALER_IDLE_TIMEOUT": "7m"}

    p = start(procs, "--config", path)
    assert p.public_port == yaml_port
    p.stop()
    p = start(procs, "--config", path, env=env)
    assert p.public_port == env_port
    assert http("GET", f"http://127.0.0.1:{env_port}/health")[0] == 200
    p.stop()
    p = start(procs, "--config", path, "--listen", f"127.0.0.1:{flag_port}", env=env)
    assert p.public_port == flag_port
    assert http("GET", f"http://127.0.0.1:{flag_port}/health")[0] == 200
    p.stop()

    # The same precedence, as --print-config shows it, for a backend setting too.
    out = run("--config", path, "--print-config", env=env).stdout
    assert f"listen: 127.0.0.1:{env_port}" in out and "idle_timeout: 7m" in out
    out = run("--config", path, "--print-config", "--listen", f"127.0.0.1:{flag_port}",
              "--idle-timeout", "3m", env=env).stdout
    assert f"listen: 127.0.0.1:{flag_port}" in out and "idle_timeout: 3m" in out
    out = run("--config", path, "--print-config").stdout
    assert f"listen: 127.0.0.1:{yaml_port}" in out and "idle_timeout: 90s" in out


KUBERNETES_BACKEND = """
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
backends:
  - name: vllm
    models: ["m"]
    upstream: http://127.0.0.1:9
    scaler: {{ type: kubernetes, deployment: vllm{kubeconfig} }}
"""

KUBECONFIG = """
apiVersion: v1
kind: Config
current-context: dev
contexts: [{name: dev, context: {cluster: c, user: u}}]
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
"""


def test_check_config_reads_the_kubeconfig_of_a_kubernetes_backend(tmp_path):
    def check(kubeconfig, env=None):
        path = write(tmp_path, KUBERNETES_BACKEND.format(
            kubeconfig=f", kubeconfig: {kubeconfig}" if kubeconfig else ""))
        return run("--check-config", path, env={"KUBERNETES_SERVICE_HOST": "", **(env or {})})

    missing = tmp_path / "missing-kubeconfig"
    [problem] = problems(check(missing))
    assert problem == f"backends[0].scaler.kubeconfig: kubeconfig {missing}: cannot read the file"
    broken = write(tmp_path, "clusters: [\n  - name: x\n", "broken-kubeconfig")
    [problem] = problems(check(broken))
    assert problem.startswith(f"backends[0].scaler.kubeconfig: kubeconfig {broken}: "), problem
    no_context = write(tmp_path, "clusters: []\n", "no-context-kubeconfig")
    [problem] = problems(check(no_context))
    assert problem.startswith("backends[0].scaler.kubeconfig: ") and "current-context" in problem
    # Found as kubectl finds it: $KUBECONFIG, named with the problem.
    [problem] = problems(check(None, env={"KUBECONFIG": str(missing)}))
    assert problem.startswith("backends[0].scaler.kubeconfig (from KUBECONFIG): "), problem
    good = write(tmp_path, KUBECONFIG, "kubeconfig")
    done = check(good)
    assert (done.returncode, done.stdout, done.stderr) == (0, "configuration is valid\n", "")
    done = check(None, env={"KUBECONFIG": str(good)})
    assert (done.returncode, done.stdout, done.stderr) == (0, "configuration is valid\n", "")


COORDINATED = """
coordination:
  type: kubernetes
  identity: {identity}
  lease_duration: {lease}
  kubeconfig: {kubeconfig}
backends:
  - name: a
    models: ["a"]
    upstream: http://127.0.0.1:8001
    scaler: {{type: kubernetes, deployment: a, kubeconfig: {kubeconfig}}}
  - name: b
    models: ["b"]
    upstream: http://127.0.0.1:8002
    scaler: {{type: process, command: ["true"]}}
"""


def test_coordination_is_checked_and_refused_with_the_process_scaler(tmp_path):
    kubeconfig = write(tmp_path, KUBECONFIG, "kubeconfig")
    bad = write(tmp_path, COORDINATED.format(identity="Proxy_0", lease="3s",
                                             kubeconfig=kubeconfig))
    assert problems(run("--check-config", bad)) == [
        "coordination.identity: must be a DNS label (lowercase letters, digits and '-', at most "
        "63), unique per replica: the pod's name (got \"Proxy_0\")",
        "coordination.lease_duration: must be at least 3 s and 3 heartbeat_intervals (a replica "
        "that misses one heartbeat must not be taken for dead)",
        "backends[1].scaler.type: the process scaler runs the backend beside one proxy: it "
        "cannot be combined with coordination (several proxy replicas)",
    ]
    good_text = COORDINATED.format(identity="proxy-0", lease="15s", kubeconfig=kubeconfig)
    good = write(tmp_path, good_text.split("  - name: b")[0], "good.yaml")
    done = run("--check-config", good)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    printed = run("--print-config", good)
    assert "identity: proxy-0" in printed.stdout and "lease_duration: 15s" in printed.stdout
    again = write(tmp_path, printed.stdout, "printed.yaml")
    assert run("--print-config", again).stdout == printed.stdout
    # Its kubeconfig is read by --check-config like a backend's.
    missing = tmp_path / "nowhere"
    text = good_text.split("  - name: b")[0].replace(f"kubeconfig: {kubeconfig}\nbackends",
                                                     f"kubeconfig: {missing}\nbackends")
    [problem] = problems(run("--check-config", write(tmp_path, text, "missing.yaml")))
    assert problem == f"coordination.kubeconfig: kubeconfig {missing}: cannot read the file"
