#!/usr/bin/env bash
# A real Kubernetes control plane for the tests: etcd + kube-apiserver + kube-controller-manager,
# all on 127.0.0.1, no kubelet and no scheduler (pods stay Pending unless a test kubelet acts).
#
#   control-plane.sh build              build kube-apiserver + kube-controller-manager 1.20 from
#                                       Debian's `kubernetes` source package (once per machine; cached)
#   control-plane.sh bindir             print the directory holding the cached binaries
#   control-plane.sh start DIR          start etcd, kube-apiserver, kube-controller-manager with their
#                                       state, certificates, logs and kubeconfig in DIR; wait until ready
#   control-plane.sh stop DIR           stop what `start DIR` started (by the PIDs in DIR/pids)
#   control-plane.sh restart-apiserver DIR
#                                       stop kube-apiserver and start it again on the same port with
#                                       the same flags (etcd keeps the state); wait until ready
#
# What `start DIR` leaves in DIR:
#   kubeconfig      admin (system:masters) kubeconfig, CA embedded: `kubectl --kubeconfig DIR/kubeconfig ...`
#   env             shell-sourceable: KUBE_SERVER, KUBE_CA_FILE, KUBE_ADMIN_TOKEN, ETCD_ENDPOINT, ...
#   pids            one line per process: "<name> <pid>"
#   pki/            ca.crt/ca.key, apiserver.crt/.key (SANs 127.0.0.1, localhost, kubernetes.default.svc...),
#                   sa.key/sa.pub (service-account token signing)
#   logs/           etcd.log, kube-apiserver.log, kube-controller-manager.log
#   etcd/           etcd's data directory
#
# The kube-controller-manager runs only the controllers the tests need (KCM_CONTROLLERS to change):
# deployment, replicaset, serviceaccount + serviceaccount-token (so every namespace gets a `default`
# ServiceAccount with a token Secret whose ca.crt is DIR/pki/ca.crt), namespace, garbagecollector,
# endpoint, endpointslice, disruption (a PodDisruptionBudget's status counts the pods it covers).
# podgc and nodelifecycle are off on purpose: there are no Node objects, and they would delete or
# evict pods that a test kubelet runs.
#
# Extra flags for tests (split on spaces): ETCD_EXTRA_ARGS, APISERVER_EXTRA_ARGS, KCM_EXTRA_ARGS.
# Checked: APISERVER_EXTRA_ARGS="--etcd-compaction-interval=1s --watch-cache=false" makes a watch from
# a resourceVersion older than a few writes answer HTTP 200 + {"type":"ERROR","object":{...,
# "reason":"Expired","code":410}} (with the watch cache on, old resourceVersions stay watchable far
# longer). Several control planes can run at once (each in its own DIR, on its own ports).
#
# Needs: bash, openssl, curl, jq, python3 (to pick free ports), Debian's etcd-server (installed by
# `start` when missing; on a machine with systemd the package also starts its own etcd service on
# 2379, which this script neither uses nor disturbs). `build` installs golang-go, rsync, jq, dpkg-dev, make when missing (as root,
# or with sudo) and derives a deb-src entry from the machine's own apt sources in an apt state
# directory of its own under the cache: the system's apt configuration is never changed.
#
# kubectl: this script needs none. The tests drive the control plane with a kubectl on PATH:
#   - the machine image here ships kubectl 1.32 (/usr/bin/kubectl, kustomize v5.5). It talks to this
#     1.20 apiserver for everything the tests do (create/apply/scale/get/describe, server-side dry run),
#     although 1.32 is outside Kubernetes' supported client skew (+/-1 minor).
#   - a fresh Debian 12 has no kubectl; `apt-get install kubernetes-client` gives kubectl 1.20.2, the
#     same version as this control plane, with an old embedded kustomize (v2.0.3): the deploy files in
#     deploy/kubernetes are written to render with both.
#
# Times on this machine (2 cores, with other builds running): first `build` 9.4 min (apt-get source
# ~5 s, then make: code generators + the two binaries, 530 s; written to BUILD-INFO beside bin/);
# cached `build` 0.01 s; `start` 9-11 s until /readyz is ok and the default ServiceAccount has its
# token; `stop` ~1.3 s; `restart-apiserver` ~8 s (2 s SIGTERM grace, 6 s until /readyz).
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-1.20.2}
CACHE_ROOT=${VLLM_AUTOSCALER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-autoscaler}
KUBE_DIR=$CACHE_ROOT/kubernetes-$KUBE_VERSION
BIN_DIR=$KUBE_DIR/bin
START_TIMEOUT=${CONTROL_PLANE_START_TIMEOUT:-90}
KCM_CONTROLLERS=${KCM_CONTROLLERS:-deployment,replicaset,serviceaccount,serviceaccount-token,namespace,garbagecollector,endpoint,endpointslice,disruption}
SERVICE_CIDR=${SERVICE_CIDR:-10.0.0.0/24} # allocation range only: nothing on this machine routes to it
SERVICE_IP=${SERVICE_IP:-10.0.0.1}        # first address of SERVICE_CIDR: the `kubernetes` Service
UA="vllm-autoscaler-control-plane/1" # not curl's: 1.20 pretty-prints JSON for curl with a broken encoder

log() { echo "control-plane: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

have_binaries() {
  [ -x "$BIN_DIR/kube-apiserver" ] && [ -x "$BIN_DIR/kube-controller-manager" ]
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

# ensure_packages PKG...: apt-get install the Debian packages that are not installed yet.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------------------------
# build

# Writes deb-src entries derived from the machine's own apt sources into $1/sources.list.d.
write_deb_src_sources() {
  local dir=$1 src=/etc/apt/sources.list.d/debian.sources
  mkdir -p "$dir/sources.list.d"
  : >"$dir/sources.list"
  rm -f "$dir/sources.list.d/"*
  if [ -f "$src" ]; then
    # deb822: the same stanzas (URIs, Suites, Components, Signed-By) with Types: deb-src.
    sed -E 's/^Types:.*/Types: deb-src/' "$src" >"$dir/sources.list.d/debian-src.sources"
  elif [ -f /etc/apt/sources.list ] && grep -qE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list; then
    # one-line style: every `deb ...` line as `deb-src ...`.
    sed -nE 's/^[[:space:]]*deb([[:space:]])/deb-src\1/p' /etc/apt/sources.list >"$dir/sources.list"
  else
    die "no Debian apt sources found (looked at $src and /etc/apt/sources.list)"
  fi
}

cmd_build() {
  if have_binaries; then
    log "kube-apiserver and kube-controller-manager $KUBE_VERSION cached in $BIN_DIR"
    echo "$BIN_DIR"
    return 0
  fi
  local t0 t1
  t0=$(date +%s)
  ensure_packages golang-go rsync jq dpkg-dev make ca-certificates

  # A private apt state (sources, lists, cache) under the cache dir; the system's is not touched.
  local apt=$CACHE_ROOT/apt
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
  write_deb_src_sources "$apt"
  local apt_opts=(
    -o "Dir::Etc::SourceList=$apt/sources.list"
    -o "Dir::Etc::SourceParts=$apt/sources.list.d"
    -o "Dir::State::Lists=$apt/lists"
    -o "Dir::Cache=$apt/cache"
  )
  # _apt cannot read a private directory under $HOME: download as the calling user instead.
  [ "$(id -u)" -eq 0 ] && apt_opts+=(-o APT::Sandbox::User=root)
  log "apt-get update (deb-src only, state in $apt)"
  apt-get "${apt_opts[@]}" -qq update

  local work=$CACHE_ROOT/build-kubernetes-$KUBE_VERSION
  rm -rf "$work"
  mkdir -p "$work"
  log "apt-get source kubernetes into $work"
  (cd "$work" && apt-get "${apt_opts[@]}" -qq source kubernetes >/dev/null)
  local src dsc
  src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -1)
  dsc=$(find "$work" -mindepth 1 -maxdepth 1 -name 'kubernetes_*.dsc' | head -1)
  if [ -z "$src" ] || [ -z "$dsc" ]; then
    die "apt-get source kubernetes left no source tree in $work"
  fi
  local deb_version src_version
  deb_version=$(sed -n 's/^Version: //p' "$dsc" | head -1)
  # The source is a `git archive` export: its version sits in hack/lib/version.sh as 'tag: vX.Y.Z'.
  src_version=$(sed -nE "s/.*'tag: v([0-9][^ ',]*)'.*/\1/p" "$src/hack/lib/version.sh" | head -1)
  [ "$src_version" = "$KUBE_VERSION" ] ||
    die "Debian's kubernetes source $deb_version is Kubernetes '$src_version', not $KUBE_VERSION (set KUBE_VERSION=$src_version)"

  log "building kube-apiserver and kube-controller-manager $KUBE_VERSION (Debian source $deb_version, $(go version | cut -d' ' -f3)); this takes a while"
  # GOPATH mode, as the tree's hack/ scripts set it; every dependency is vendored, so it builds
  # offline. CGO_ENABLED=0 as Debian's own debian/rules builds it.
  (
    cd "$src"
    unset GOFLAGS GOPATH GOROOT
    export GO111MODULE=off CGO_ENABLED=0 GOPROXY=off GOTOOLCHAIN=local
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager"
  ) >"$work/build.log" 2>&1 || {
    tail -30 "$work/build.log" >&2
    die "build failed; full log: $work/build.log"
  }
  local b
  for b in kube-apiserver kube-controller-manager; do
    "$src/_output/bin/$b" --version 2>&1 | grep -qx "Kubernetes v$KUBE_VERSION" ||
      die "$src/_output/bin/$b --version: $("$src/_output/bin/$b" --version 2>&1)"
  done
  rm -rf "$KUBE_DIR/bin.tmp"
  mkdir -p "$KUBE_DIR/bin.tmp"
  cp "$src/_output/bin/kube-apiserver" "$src/_output/bin/kube-controller-manager" "$KUBE_DIR/bin.tmp/"
  rm -rf "$BIN_DIR"
  mv "$KUBE_DIR/bin.tmp" "$BIN_DIR"
  t1=$(date +%s)
  cat >"$KUBE_DIR/BUILD-INFO" <<EOF
kubernetes $KUBE_VERSION from Debian source package kubernetes $deb_version
go: $(go version)
built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores in $((t1 - t0)) s (apt-get source + make)
EOF
  [ "${KEEP_BUILD_DIR:-0}" = 1 ] || rm -rf "$work"
  log "built in $((t1 - t0)) s; binaries in $BIN_DIR"
  echo "$BIN_DIR"
}

# ---------------------------------------------------------------------------------------------------
# start / stop

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# pid_of DIR NAME: the PID recorded for NAME in DIR/pids (empty if none).
pid_of() {
  [ -f "$1/pids" ] || return 0
  awk -v n="$2" '$1==n {print $2}' "$1/pids" | tail -1
}

# alive PID NAME: PID runs and is the NAME binary (guards against a recycled PID).
alive() {
  local pid=$1 name=$2
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -1 | grep -q "$name\$"
}

# stop_pid PID NAME: SIGTERM, then SIGKILL after the grace period. kube-apiserver closes its port at
# once on SIGTERM but then waits up to a minute for open watches (its own loopback informers among
# them) to drain; nothing here needs that, so it gets APISERVER_STOP_GRACE (2 s) before SIGKILL.
stop_pid() {
  local pid=$1 name=$2 grace=10
  [ "$name" = kube-apiserver ] && grace=${APISERVER_STOP_GRACE:-2}
  alive "$pid" "$name" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 $((grace * 10))); do
    alive "$pid" "$name" || return 0
    sleep 0.1
  done
  [ "$name" = kube-apiserver ] || log "$name ($pid) did not stop on SIGTERM in $grace s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    alive "$pid" "$name" || return 0
    sleep 0.1
  done
  log "$name ($pid) still running after SIGKILL"
  return 1
}

make_pki() {
  local pki=$1
  mkdir -p "$pki"
  (
    cd "$pki"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -subj "/CN=vllm-autoscaler-test-ca" \
      -keyout ca.key -out ca.crt -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    cat >apiserver.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:::1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=kube-apiserver" \
      -keyout apiserver.key -out apiserver.csr 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -sha256 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 644 ca.crt apiserver.crt sa.pub
  )
}

# write_kubeconfig FILE SERVER CA TOKEN USER
write_kubeconfig() {
  local ca_data
  ca_data=$(base64 -w0 <"$3")
  (
    umask 077
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vllm-autoscaler-test
  cluster:
    server: $2
    certificate-authority-data: $ca_data
users:
- name: $5
  user:
    token: $4
contexts:
- name: vllm-autoscaler-test
  context:
    cluster: vllm-autoscaler-test
    user: $5
    namespace: default
current-context: vllm-autoscaler-test
EOF
  )
}

# api DIR PATH: GET PATH from the apiserver as admin; prints the body, fails on non-2xx.
api() {
  # shellcheck disable=SC1091
  (. "$1/env" && curl -fsS --max-time 5 -A "$UA" --cacert "$KUBE_CA_FILE" \
    -H "Authorization: Bearer $KUBE_ADMIN_TOKEN" "$KUBE_SERVER$2")
}

# wait_for DIR WHAT CMD...: retries CMD until it succeeds, while every started process is alive.
wait_for() {
  local dir=$1 what=$2 deadline name pid
  shift 2
  deadline=$(($(date +%s) + START_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    while read -r name pid; do
      alive "$pid" "$name" || {
        log "$name exited while waiting for $what; last lines of $dir/logs/$name.log:"
        tail -20 "$dir/logs/$name.log" >&2 || true
        return 1
      }
    done <"$dir/pids"
    [ "$(date +%s)" -lt "$deadline" ] || {
      log "timed out after ${START_TIMEOUT}s waiting for $what (logs in $dir/logs)"
      return 1
    }
    sleep 0.2
  done
}

# launch DIR NAME CMD...: starts CMD in the background, logging to DIR/logs/NAME.log.
launch() {
  local dir=$1 name=$2
  shift 2
  printf '%q ' "$@" >"$dir/cmd/$name"
  "$@" </dev/null >>"$dir/logs/$name.log" 2>&1 &
  echo "$name $!" >>"$dir/pids"
}

readyz_ok() { [ "$(api "$1" /readyz)" = ok ]; }

# The serviceaccount controller made the `default` ServiceAccount and the token controller its Secret.
default_sa_has_token() {
  api "$1" /api/v1/namespaces/default/serviceaccounts/default | jq -e '(.secrets // []) | length > 0'
}

start_apiserver() {
  local dir=$1 KUBE_PORT ETCD_ENDPOINT
  KUBE_PORT=$(sed -n 's/^KUBE_PORT=//p' "$dir/env")
  ETCD_ENDPOINT=$(sed -n 's/^ETCD_ENDPOINT=//p' "$dir/env")
  # shellcheck disable=SC2086
  launch "$dir" kube-apiserver "$BIN_DIR/kube-apiserver" \
    --etcd-servers="$ETCD_ENDPOINT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$KUBE_PORT" \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
    --client-ca-file="$dir/pki/ca.crt" \
    --token-auth-file="$dir/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$dir/pki/sa.pub" \
    --service-account-signing-key-file="$dir/pki/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --profiling=false \
    ${APISERVER_EXTRA_ARGS:-}
}

cmd_start() {
  local dir=$1 t0 attempt
  have_binaries || die "no kube-apiserver $KUBE_VERSION in $BIN_DIR: run '$0 build' first (takes a while once)"
  command -v etcd >/dev/null 2>&1 || ensure_packages etcd-server
  for c in openssl curl jq python3; do
    command -v "$c" >/dev/null 2>&1 || die "$c is needed"
  done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pids" ]; then
    local name pid
    while read -r name pid; do
      alive "$pid" "$name" && die "$dir already has a running $name ($pid): '$0 stop $dir' first"
    done <"$dir/pids"
  fi
  t0=$(date +%s%N)
  for attempt in 1 2 3; do
    start_once "$dir" && break
    cmd_stop "$dir" >/dev/null 2>&1 || true
    [ "$attempt" -lt 3 ] || die "control plane did not start (logs in $dir/logs)"
    log "start attempt $attempt failed; retrying with new ports"
  done
  local ms=$((($(date +%s%N) - t0) / 1000000))
  log "ready in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s: kubectl --kubeconfig $dir/kubeconfig"
}

start_once() {
  local dir=$1
  rm -rf "$dir/etcd" "$dir/logs" "$dir/cmd" "$dir/pki" "$dir/pids"
  mkdir -p "$dir/logs" "$dir/cmd"
  : >"$dir/pids"
  make_pki "$dir/pki"

  local etcd_port etcd_peer_port kube_port admin_token kcm_token
  etcd_port=$(free_port)
  etcd_peer_port=$(free_port)
  kube_port=$(free_port)
  admin_token=$(openssl rand -hex 24)
  kcm_token=$(openssl rand -hex 24)
  (
    umask 077
    # token,user,uid,"group1,group2"
    cat >"$dir/tokens.csv" <<EOF
$admin_token,admin,admin,"system:masters"
$kcm_token,system:kube-controller-manager,system:kube-controller-manager,"system:masters"
EOF
  )
  cat >"$dir/env" <<EOF
KUBE_SERVER=https://127.0.0.1:$kube_port
KUBE_PORT=$kube_port
KUBE_CA_FILE=$dir/pki/ca.crt
KUBE_ADMIN_TOKEN=$admin_token
KUBECONFIG_ADMIN=$dir/kubeconfig
ETCD_ENDPOINT=http://127.0.0.1:$etcd_port
KUBE_VERSION=$KUBE_VERSION
KUBE_BIN_DIR=$BIN_DIR
EOF
  write_kubeconfig "$dir/kubeconfig" "https://127.0.0.1:$kube_port" "$dir/pki/ca.crt" "$admin_token" admin
  write_kubeconfig "$dir/kube-controller-manager.kubeconfig" "https://127.0.0.1:$kube_port" \
    "$dir/pki/ca.crt" "$kcm_token" system:kube-controller-manager

  # shellcheck disable=SC2086
  launch "$dir" etcd etcd --name=default --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="default=http://127.0.0.1:$etcd_peer_port" \
    --log-level=warn ${ETCD_EXTRA_ARGS:-}
  wait_for "$dir" etcd curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" || return 1

  start_apiserver "$dir"
  wait_for "$dir" "kube-apiserver /readyz" readyz_ok "$dir" || return 1

  # shellcheck disable=SC2086
  launch "$dir" kube-controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig="$dir/kube-controller-manager.kubeconfig" \
    --controllers="$KCM_CONTROLLERS" \
    --service-account-private-key-file="$dir/pki/sa.key" \
    --root-ca-file="$dir/pki/ca.crt" \
    --use-service-account-credentials=false \
    --leader-elect=false \
    --port=0 --secure-port=0 \
    --profiling=false \
    ${KCM_EXTRA_ARGS:-}
  wait_for "$dir" "the default ServiceAccount's token (kube-controller-manager)" default_sa_has_token "$dir" || return 1
}

cmd_stop() {
  local dir=$1 name pid
  [ -f "$dir/pids" ] || {
    log "nothing to stop: no $dir/pids"
    return 0
  }
  # Reverse order: controller-manager, apiserver, etcd.
  tac "$dir/pids" | while read -r name pid; do
    stop_pid "$pid" "$name"
  done
  rm -f "$dir/pids"
  log "stopped"
}

cmd_restart_apiserver() {
  local dir=$1 pid t0
  [ -f "$dir/env" ] || die "no $dir/env: not started"
  pid=$(pid_of "$dir" kube-apiserver)
  stop_pid "$pid" kube-apiserver
  # Keep the other PIDs; the new apiserver's PID is appended by launch.
  awk '$1 != "kube-apiserver"' "$dir/pids" >"$dir/pids.tmp" && mv "$dir/pids.tmp" "$dir/pids"
  t0=$(date +%s)
  start_apiserver "$dir"
  wait_for "$dir" "kube-apiserver /readyz" readyz_ok "$dir" || die "kube-apiserver did not come back"
  log "kube-apiserver restarted in $(($(date +%s) - t0)) s"
}

[ $# -ge 1 ] || usage
case $1 in
  build) cmd_build ;;
  bindir) echo "$BIN_DIR" ;;
  start)
    [ $# -eq 2 ] || usage
    cmd_start "$2"
    ;;
  stop)
    [ $# -eq 2 ] || usage
    cmd_stop "$2"
    ;;
  restart-apiserver)
    [ $# -eq 2 ] || usage
    cmd_restart_apiserver "$2"
    ;;
  *) usage ;;
esac
