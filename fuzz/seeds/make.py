#!/usr/bin/python3
"""Writes the hand-made seed inputs of each fuzz target into fuzz/corpus/<target>/seed-<name>.

The corpora then grow by fuzzing (scripts/fuzz --grow); this keeps the starting points readable.
Run from anywhere: /usr/bin/python3 fuzz/seeds/make.py
"""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-fuzz\r\n"

SEEDS = {
    "request": {
        "chat": CHAT + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
        "pipelined": (CHAT + b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)) * 2
        + b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
        "chunked": CHAT + b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\n" + BODY[:5] + b"\r\n"
        + b"%x\r\n" % (len(BODY) - 5) + BODY[5:] + b"\r\n0\r\nTrailer: x\r\n\r\n",
        "get-http10": b"GET /health HTTP/1.0\r\n\r\n",
        "head-keepalive": b"HEAD /v1/models?x=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
        "cl-te": CHAT + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "two-cl": CHAT + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "cl-list": CHAT + b"Content-Length: 5, 5\r\n\r\nhello",
        "obs-fold": CHAT + b"X-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        "bare-lf": b"POST /v1/completions HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}",
        "te-identity": CHAT + b"Transfer-Encoding: identity\r\n\r\nabc",
        "te-gzip-chunked": CHAT + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "bad-chunk": CHAT + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        "expect": CHAT + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        "multipart": b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 95\r\n\r\n"
        b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--XyZ--\r\n"
        b"0123456789abcdef",
        "upgrade": b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "absolute-target": b"OPTIONS http://x/v1/models HTTP/1.1\r\nHost: y\r\n\r\n",
    },
    "model": {
        "json": b"application/json\n" + BODY,
        "escaped-key": b"application/json\n{\"mo\\u0064el\":\"a\\\"b\",\"x\":{\"model\":1}}",
        "null": b"application/json\n{\"model\":null}",
        "number": b"application/json\n{\"model\":12.5e3}",
        "nested": b"application/json\n{\"a\":[{\"model\":\"x\"}],\"model\":\"y\",\"model\":\"z\"}",
        "not-object": b"application/json\n[\"model\"]",
        "trailing": b"application/json\n{\"model\":\"m\"} {}",
        "multipart": b"multipart/form-data; boundary=\"b\"\n--b\r\nContent-Disposition: form-data; "
        b"name=\"file\"\r\n\r\nxx\r\n--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nw\r\n--b--",
    },
    "config": {
        "local": (ROOT / "examples/local.yaml").read_bytes(),
        "kubernetes": b"listen: 0.0.0.0:8080\nadmin_listen: 0.0.0.0:8081\nthreads: 1\n"
        b"log: {level: info, format: json}\nlimits: {max_header_bytes: 16384, header_timeout: 10s}\n"
        b"auth: {api_keys: [\"${FUZZ}\", \"k2\"]}\n"
        b"backends:\n  - name: qwen\n    models: [a, b]\n    default: true\n"
        b"    upstream: http://vllm.default.svc:8000\n    idle_timeout: 15m\n    wake_timeout: 10m\n"
        b"    upstream_timeout: 10m\n    health: {path: /health, interval: 1s, headers: {Authorization: x}}\n"
        b"    scaler: {type: kubernetes, namespace: ml, deployment: vllm, replicas: 1}\n",
        "two-backends": b"backends:\n  - name: a\n    models: [m1]\n    upstream: http://[::1]:8001/\n"
        b"    scaler: {type: static}\n  - name: b\n    models: [m2]\n    default: true\n"
        b"    upstream: http://127.0.0.1:8002\n    scaler:\n      type: process\n"
        b"      command: [vllm, serve, --api-key, secret]\n      env: {HF_TOKEN: t}\n",
        "bad": b"listen: [\nbackends: 3\n",
    },
    "k8s": {
        "watch": b"{\"type\":\"ADDED\",\"object\":{\"kind\":\"Deployment\",\"metadata\":{\"name\":\"vllm\","
        b"\"resourceVersion\":\"12\",\"generation\":3},\"spec\":{\"replicas\":1},\"status\":"
        b"{\"readyReplicas\":1,\"observedGeneration\":3}}}\n\n"
        b"{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"13\"}}}\n"
        b"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,\"reason\":\"Expired\","
        b"\"message\":\"too old resource version\"}}\n{\"type\":\"DELE",
        "status": b"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"message\":"
        b"\"etcdserver: mvcc: required revision has been compacted\",\"reason\":\"Conflict\",\"code\":409}",
        "exec-v1": b"{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\","
        b"\"status\":{\"token\":\"abcdefgh12345\",\"expirationTimestamp\":\"2026-05-01T13:00:00.25+02:00\"}}",
        "exec-cert": b"{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\","
        b"\"status\":{\"clientCertificateData\":\"x\",\"clientKeyData\":\"y\"}}",
        "base64": b"aGVs\nbG8h",
    },
    "kubeconfig": {
        "token": b"apiVersion: v1\nkind: Config\ncurrent-context: dev\ncontexts:\n- name: dev\n"
        b"  context:\n    cluster: c1\n    user: u1\n    namespace: ml\nclusters:\n- name: c1\n"
        b"  cluster:\n    server: https://[::1]:6443/prefix/\n    insecure-skip-tls-verify: true\n"
        b"    tls-server-name: api\nusers:\n- name: u1\n  user:\n    token: abc\n",
        "exec": b"apiVersion: v1\nkind: Config\ncurrent-context: dev\ncontexts:\n- name: dev\n"
        b"  context: {cluster: c1, user: u1}\nclusters:\n- name: c1\n  cluster:\n"
        b"    server: https://127.0.0.1\n    certificate-authority-data: aGVsbG8=\nusers:\n- name: u1\n"
        b"  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: gcloud\n"
        b"      args: [a, b]\n      env: [{name: X, value: y}]\n      interactiveMode: Never\n"
        b"      provideClusterInfo: true\n      installHint: install it\n",
        "auth-provider": b"apiVersion: v1\ncurrent-context: d\ncontexts: [{name: d, context: {cluster: c, user: u}}]\n"
        b"clusters: [{name: c, cluster: {server: 'http://h:80'}}]\nusers: [{name: u, user: {auth-provider: {name: gcp}}}]\n",
    },
}

for target, seeds in SEEDS.items():
    d = ROOT / "fuzz" / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (d / f"seed-{name}").write_bytes(data)
    print(f"{target}: {len(seeds)} seeds")
