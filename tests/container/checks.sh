# shellcheck shell=bash
# Sourced by tests/container/run.sh once the image is built: runs it and checks it from outside.
# The run is what a container runtime does, by hand: the image's root filesystem (buildah mount)
# bound read-only, /proc, a tmpfs /tmp and /dev (null, zero, random, urandom), the configuration
# directory bound over /etc/eam-proxy (as a Kubernetes ConfigMap volume is), the host network,
# then the image's ENTRYPOINT and CMD with its Env, as its User. Needs bah, pass, fail, finish,
# containers, scratch and image from run.sh.

: "${image:?sourced by tests/container/run.sh}"
work=$(mktemp -d)
scratch+=("$work")
chmod 0755 "$work"
root="$work/root"
conf="$work/conf"
mkdir -p "$root" "$conf"

# free_ports N, wait_http URL SECONDS
# shellcheck source=tests/lib/loopback.sh
. tests/lib/loopback.sh
read -r upstream_port proxy_port admin_port < <(free_ports 3)
grace=4
client_id=56c2b5e3-c41d-4c14-abcf-72d407f57650

# The configuration as an operator would mount it. The key set is a file (jwks_file), so the run
# needs no network beyond loopback.
cp tests/fixtures/keys/public.jwks.json "$conf/keys.json"
cat >"$conf/eam-proxy.toml" <<TOML
[server]
listen = ["127.0.0.1:$proxy_port"]
admin_listen = "127.0.0.1:$admin_port"
threads = 1
grace_period_seconds = $grace

[upstream]
addresses = ["127.0.0.1:$upstream_port"]
connect_timeout_ms = 1000
health_check_interval_ms = 500

[authorize]
error_delivery = "status"

[log]
format = "json"

[[apps]]
client_id = "$client_id"
audiences = ["600b719b-3766-4dc5-95a6-3c4a8dc31885"]

[clouds.global]
jwks_file = "/etc/eam-proxy/keys.json"
TOML
chmod -R a+rX "$conf"

# The image's own start-up settings, as a runtime reads them.
bah inspect --type image "$image" >"$work/image.json"
image_field() { python3 -c 'import json, sys
c = json.load(open(sys.argv[1]))["OCIv1"]["config"]; v = c.get(sys.argv[2]) or ""
print("\n".join(v) if isinstance(v, list) else v)' "$work/image.json" "$1"; }
user=$(image_field User)
mapfile -t entrypoint < <(image_field Entrypoint)
mapfile -t cmd < <(image_field Cmd)
mapfile -t envs < <(image_field Env)
case "$user" in *[!0-9:]* | "") fail "image user is numeric uid:gid" "User is '$user'" ;; *) pass "image user is $user" ;; esac
uid=${user%%:*}
gid=${user#*:}

ctr=$(bah from --quiet "$image")
containers+=("$ctr")
mnt=$(bah mount "$ctr")

# run_image LOG ARG...: the image's ENTRYPOINT with ARGs (CMD when none) in the set-up described
# above, in the background; its pid (that of the binary: each step execs the next) in run_pid.
run_image() {
  local log=$1
  shift
  local args=("$@")
  [ ${#args[@]} -gt 0 ] || args=("${cmd[@]}")
  # shellcheck disable=SC2016 # the inner script's own variables
  unshare --mount --propagation private -- bash -euc '
    mnt=$1 root=$2 conf=$3 uid=$4 gid=$5
    shift 5
    mount --bind "$mnt" "$root"
    mount -o remount,bind,ro "$root"
    mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
    mount -t tmpfs -o nosuid,nodev,mode=1777,size=16m tmpfs "$root/tmp"
    mount -t tmpfs -o nosuid,mode=0755,size=64k tmpfs "$root/dev"
    for d in null zero random urandom; do
      touch "$root/dev/$d"
      mount --bind "/dev/$d" "$root/dev/$d"
    done
    mount --bind "$conf" "$root/etc/eam-proxy"
    mount -o remount,bind,ro "$root/etc/eam-proxy"
    env=()
    while [ "$1" != -- ]; do env+=("$1"); shift; done
    shift
    exec env -i "${env[@]}" chroot --userspec="$uid:$gid" --groups="$gid" "$root" "$@"
  ' run "$mnt" "$root" "$conf" "$uid" "$gid" "${envs[@]}" -- "${entrypoint[@]}" "${args[@]}" \
    >"$log" 2>&1 &
  run_pid=$!
}

record="$work/upstream.jsonl"
: >"$record"
python3 tests/container/upstream.py "$upstream_port" "$record" >"$work/upstream.log" 2>&1 &
upstream_pid=$!
pids+=("$upstream_pid")
wait_http "http://127.0.0.1:$upstream_port/.well-known/openid-configuration" 10 ||
  fail "the upstream listens" "$(cat "$work/upstream.log")"

# 1. --check on the mounted configuration, through the image's entrypoint.
run_image "$work/check.log" --check --config /etc/eam-proxy/eam-proxy.toml
if wait "$run_pid"; then
  pass "--check exits 0 on the mounted configuration ($(tail -n 1 "$work/check.log"))"
else
  fail "--check exits 0" "$(cat "$work/check.log")"
fi

# 2. The image's ENTRYPOINT and CMD, as its user.
run_image "$work/proxy.log"
proxy_pid=$run_pid
pids+=("$proxy_pid")
admin="http://127.0.0.1:$admin_port"
proxy="http://127.0.0.1:$proxy_port"

if wait_http "$admin/healthz" 20; then pass "/healthz answers 200"; else fail "/healthz answers 200" "$(tail -n 20 "$work/proxy.log")"; fi
if wait_http "$admin/readyz" 20; then
  pass "/readyz answers 200 ($(curl -sS --max-time 2 "$admin/readyz" | head -n 1))"
else
  fail "/readyz answers 200" "$(curl -sS --max-time 2 "$admin/readyz" 2>&1); $(tail -n 20 "$work/proxy.log")"
fi

status=$(awk '$1 == "Uid:" || $1 == "Gid:" || $1 == "Groups:" {$1 = $1; print}' "/proc/$proxy_pid/status" 2>/dev/null | paste -sd ';')
exe=$(readlink "/proc/$proxy_pid/exe" 2>/dev/null || true)
if [[ "$status" == "Uid: $uid $uid $uid $uid;Gid: $gid $gid $gid $gid;Groups: $gid" ]] &&
  [[ "$exe" == */usr/local/bin/eam-proxy ]]; then
  pass "the process (pid $proxy_pid, $exe) runs as uid $uid gid $gid"
else
  fail "the process runs as uid $uid" "$status; exe $exe"
fi
cap_eff=$(awk '$1 == "CapEff:" {print $2}' "/proc/$proxy_pid/status")
if [ "$cap_eff" = 0000000000000000 ]; then pass "no effective capabilities"; else fail "no effective capabilities" "CapEff $cap_eff"; fi
root_opts=$(awk '$5 == "/" {print $6}' "/proc/$proxy_pid/mountinfo" | tail -n 1)
if [[ ",$root_opts," == *,ro,* ]]; then pass "root filesystem is read-only ($root_opts)"; else fail "root filesystem is read-only" "$root_opts"; fi

body=$(curl -sS --max-time 5 "$proxy/userinfo?from=container-suite" || true)
if [ "$body" = "upstream saw GET /userinfo?from=container-suite" ] &&
  grep -q '"path": "/userinfo?from=container-suite"' "$record"; then
  pass "a pass-through request reaches the upstream"
else
  fail "a pass-through request reaches the upstream" "answer '$body'"
fi

# A forged Entra hint: Entra's form, its token signed with the attacker's key under the signer's kid.
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
header=$(printf '%s' '{"typ":"JWT","alg":"RS256","kid":"signer"}' | b64url)
payload=$(printf '{"ver":"2.0","iss":"https://login.microsoftonline.com/9122040d-6c67-4c5b-b112-36a304b66dad/v2.0","sub":"forged","aud":"600b719b-3766-4dc5-95a6-3c4a8dc31885","exp":%d,"iat":%d,"nbf":%d,"oid":"951ddb04-b16d-45f3-bbf7-b0fa18fa7aee","tid":"9122040d-6c67-4c5b-b112-36a304b66dad"}' \
  "$now" "$now" "$now" | b64url)
sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign tests/fixtures/keys/foreign.pem -binary | b64url)
form="scope=openid&response_type=id_token&response_mode=form_post&client_id=$client_id"
form+="&redirect_uri=https%3A%2F%2Flogin.microsoftonline.com%2Fcommon%2Ffederation%2Fexternalauthprovider"
form+="&nonce=container-suite-nonce&state=container-suite-state&client-request-id=3f2504e0-4f89-41d3-9a0c-0305e82c3301"
form+="&id_token_hint=$header.$payload.$sig"
answer=$(curl -sS --max-time 5 -o "$work/forged.body" -w '%{http_code}' -d "$form" "$proxy/authorize" || true)
# The decision line may reach the log just after the answer.
for _ in $(seq 20); do grep -q '"outcome":"rejected"' "$work/proxy.log" && break; sleep 0.1; done
if [ "$answer" = 400 ] && grep -q '"error":"invalid_request"' "$work/forged.body" &&
  ! grep -q '/authorize' "$record" && grep -q '"outcome":"rejected","reason":"bad_signature"' "$work/proxy.log"; then
  pass "a forged Entra hint gets 400 invalid_request (bad_signature) and never reaches the upstream"
else
  fail "a forged Entra hint is refused" "status $answer, $(cat "$work/forged.body"); upstream saw: $(grep authorize "$record" || true)"
fi

# 3. SIGTERM while a slow request is in flight: it completes, and the process exits 0 within the
# grace period (the full period, plus one second for shutdown: README "Signals").
curl -sS --max-time 20 -o "$work/slow.body" -w '%{http_code}' "$proxy/slow?s=2" >"$work/slow.status" 2>&1 &
slow_pid=$!
for _ in $(seq 50); do grep -q '/slow' "$record" && break; sleep 0.1; done
t_term=$(date +%s%N)
kill -TERM "$proxy_pid"
slow_rc=0
wait "$slow_pid" || slow_rc=$?
# Exited: gone, or a zombie this shell has not reaped yet.
exited() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
  [ -z "$state" ] || [ "$state" = Z ]
}
limit=$((grace + 2))
for ((i = 0; i < (limit + 3) * 10; i++)); do exited "$proxy_pid" && break; sleep 0.1; done
took_ms=$((($(date +%s%N) - t_term) / 1000000))
exited "$proxy_pid" || kill -KILL "$proxy_pid" 2>/dev/null || true
exit_rc=0
wait "$proxy_pid" || exit_rc=$?
if [ "$slow_rc" -eq 0 ] && [ "$(cat "$work/slow.status")" = 200 ] && grep -q 'upstream saw GET /slow' "$work/slow.body"; then
  pass "SIGTERM: the in-flight slow request completes (200)"
else
  fail "SIGTERM: the in-flight slow request completes" "curl $slow_rc, $(cat "$work/slow.status")"
fi
if [ "$exit_rc" -eq 0 ] && [ "$took_ms" -le $((limit * 1000)) ]; then
  pass "SIGTERM: the process exits 0 after the grace period (${took_ms} ms; grace ${grace} s, limit ${limit} s)"
else
  fail "SIGTERM: the process exits 0 within ${limit} s" "status $exit_rc after ${took_ms} ms; $(tail -n 5 "$work/proxy.log")"
fi
if [ "${EAM_CONTAINER_VERBOSE:-0}" = 1 ]; then cat "$work/proxy.log"; fi
