#!/usr/bin/env bash
# Offline validation of the deployment artefacts under deploy/ (tests/run.sh runs it).
#
#   bash deploy/validate.sh
#
#  - every kustomize overlay under deploy/kubernetes/ is rendered (kubectl kustomize) and each
#    object validated against the Kubernetes API schemas in strict mode (PyPI kubernetes-validate,
#    versions $EAM_K8S_VERSIONS), then cross-checked (deploy/validate/check_manifests.py);
#  - `eam-proxy --check` on every configuration: config/eam-proxy.toml (shipped in the image),
#    every *.toml under deploy/, and each configuration the overlays put in a ConfigMap;
#  - the systemd unit: systemd-analyze verify and security, agreement with its configuration, and
#    a smoke run of its ExecStart/ExecReload/stop commands: a zero-downtime upgrade that must not
#    refuse a single request;
#  - hadolint on deploy/Dockerfile, shellcheck on deploy/*.sh, paths named in docs/DEPLOYING.md;
#  - with CI=true (unless EAM_BUILD_RELEASE=0) or EAM_BUILD_RELEASE=1: deploy/build.sh (the
#    image's build recipe) and checks of the staged runtime tree the Dockerfile copies.
#
# Ends with `deploy: N passed, N failed, N skipped`; exits non-zero when anything failed.
# Environment: EAM_PROXY_BIN (a built binary; default: the workspace's debug build),
# EAM_DEPLOY_CACHE (where the tools' virtualenv is kept), EAM_K8S_VERSIONS (default
# 1.30.0,1.37.0), CI / EAM_BUILD_RELEASE (see above).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
repo=$(pwd)

k8s_versions=${EAM_K8S_VERSIONS:-1.30.0,1.37.0}
cache=${EAM_DEPLOY_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/eam-proxy/deploy-validate}
work=$(mktemp -d "${TMPDIR:-/tmp}/eam-deploy.XXXXXX")
smoke_pids=()
cleanup() {
  local pid
  for pid in "${smoke_pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "ok    $1"; }
fail() {
  failed=$((failed + 1))
  echo "FAIL  $1"
  [ -z "${2:-}" ] || printf '%s\n' "$2" | tail -n 25 | sed 's/^/      /'
}
skip() { skipped=$((skipped + 1)); echo "skip  $1 ($2)"; }
# check NAME COMMAND...: passes when COMMAND exits 0; its output is shown only on failure.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$out"; fi
}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}

echo "deploy/validate.sh: Kubernetes schemas $k8s_versions; work dir $work"

# --- Tools: a virtualenv keyed by the requirements and the Python version ----------------------
venv=""
requirements=deploy/validate/requirements.txt
if command -v python3 >/dev/null 2>&1; then
  key=$({ cat "$requirements"; python3 --version; } | sha256sum | cut -c1-16)
  venv="$cache/venv-$key"
  mkdir -p "$cache"
  # One installer at a time (a virtualenv cannot be built elsewhere and moved into place).
  exec 9>"$cache/.lock"
  command -v flock >/dev/null 2>&1 && flock 9
  if [ ! -e "$venv/.complete" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >/dev/null 2>&1 || { apt_install python3-venv && python3 -m venv "$venv"; } >/dev/null 2>&1
    if out=$("$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" 2>&1); then
      touch "$venv/.complete"
    else
      rm -rf "$venv"
      fail "install validation tools ($requirements)" "$out"
      venv=""
    fi
  fi
  exec 9>&-
else
  fail "python3 present" "python3 is needed for the validation tools"
fi
[ -z "$venv" ] || pass "validation tools ready ($venv)"
py=${venv:+$venv/bin/python}

# --- The binary ---------------------------------------------------------------------------------
bin=${EAM_PROXY_BIN:-}
if [ -z "$bin" ]; then
  # The same command as tests/run.sh: the same features, so neither build undoes the other.
  if out=$(cargo build --locked --workspace --bins 2>&1); then
    bin=$repo/target/debug/eam-proxy
    pass "cargo build --workspace --bins (debug eam-proxy)"
  else
    fail "cargo build --workspace --bins (debug eam-proxy)" "$out"
  fi
fi

# --- Scripts and Dockerfile ---------------------------------------------------------------------
for script in deploy/*.sh; do
  if [ -n "$venv" ]; then
    check "shellcheck $script" "$venv/bin/shellcheck" -x "$script"
  else
    fail "shellcheck $script" "no validation tools"
  fi
done
if [ -n "$venv" ]; then
  check "hadolint deploy/Dockerfile" "$venv/bin/hadolint" deploy/Dockerfile
else
  fail "hadolint deploy/Dockerfile" "no validation tools"
fi
dockerfile_final_stage() { awk '/^FROM /{buf=""} {buf = buf $0 "\n"} END {printf "%s", buf}' deploy/Dockerfile; }
final=$(dockerfile_final_stage)
check "Dockerfile: runtime stage runs as a non-root uid" \
  grep -Eq '^USER [1-9][0-9]*(:[1-9][0-9]*)?$' <<<"$final"
entrypoint_and_cmd() {
  grep -qxF 'ENTRYPOINT ["/usr/local/bin/eam-proxy"]' <<<"$final" &&
    grep -qxF 'CMD ["--config", "/etc/eam-proxy/eam-proxy.toml"]' <<<"$final"
}
check "Dockerfile: ENTRYPOINT and CMD run the binary with /etc/eam-proxy/eam-proxy.toml" entrypoint_and_cmd
check "Dockerfile: build stage runs deploy/build.sh" grep -Eq 'deploy/build\.sh /out' deploy/Dockerfile

# --- Kubernetes: render every overlay, validate, cross-check --------------------------------------
kustomize_cmd=()
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  kustomize_cmd=(kubectl kustomize)
elif command -v kustomize >/dev/null 2>&1; then
  kustomize_cmd=(kustomize build)
fi
configs="$work/configs"
mkdir -p "$configs"
overlays=()
for kustomization in deploy/kubernetes/*/kustomization.yaml; do
  grep -q '^kind: Component' "$kustomization" || overlays+=("$(dirname "$kustomization")")
done
if [ ${#overlays[@]} -gt 0 ]; then
  pass "kustomize overlays found: ${overlays[*]}"
else
  fail "kustomize overlays found" "none under deploy/kubernetes"
fi
rendered_all="$work/all-rendered.txt"
: >"$rendered_all"
for overlay in "${overlays[@]}"; do
  name=$(basename "$overlay")
  if [ ${#kustomize_cmd[@]} -eq 0 ]; then
    fail "render $overlay" "neither kubectl (with kustomize, >= 1.27) nor kustomize (>= 5) is installed"
    continue
  fi
  if ! out=$("${kustomize_cmd[@]}" "$overlay" 2>&1 >"$work/$name.yaml"); then
    fail "render $overlay (${kustomize_cmd[*]})" "$out"
    continue
  fi
  pass "render $overlay (${kustomize_cmd[*]})"
  # Which directories this overlay pulled in (for the components check below).
  grep -rhoE '^\s*- \.\./[^ ]+' "$overlay"/*.yaml >>"$rendered_all" 2>/dev/null
  if [ -z "$py" ]; then
    fail "validate $overlay" "no validation tools"
    continue
  fi
  "$py" deploy/validate/check_manifests.py --name "$name" --kubernetes-versions "$k8s_versions" \
    --configs-out "$configs" "$work/$name.yaml" >"$work/$name.checks" 2>&1
  status=$?
  while IFS= read -r line; do
    case "$line" in
      PASS\ *) pass "$name: ${line#PASS }" ;;
      FAIL\ *) fail "$name: ${line#FAIL }" ;;
    esac
  done <"$work/$name.checks"
  if [ $status -ne 0 ] && ! grep -q '^FAIL ' "$work/$name.checks"; then
    fail "validate $overlay" "$(cat "$work/$name.checks")"
  fi
done
for component in deploy/kubernetes/components/*/; do
  component=${component%/}
  check "component $component is used (so rendered) by an overlay" \
    grep -q "components/$(basename "$component")" "$rendered_all"
done

# --- eam-proxy --check on every configuration ----------------------------------------------------
staged_count=0
check_config() {
  local label=$1 file=$2 staged
  if [ -z "$bin" ]; then fail "eam-proxy --check $label" "no binary"; return; fi
  staged_count=$((staged_count + 1))
  staged="$work/staged-$staged_count-$(basename "$file")"
  if ! out=$("${py:-python3}" deploy/validate/stage_config.py "$work/fsroot" "$file" "$staged" 2>&1); then
    fail "eam-proxy --check $label" "$out"
    return
  fi
  check "eam-proxy --check $label" "$bin" --check --config "$staged"
}
check_config config/eam-proxy.toml config/eam-proxy.toml
while IFS= read -r file; do
  check_config "$file" "$file"
done < <(find deploy -name '*.toml' -exec grep -l '^\[\[apps\]\]' {} + | sort)  # eam-proxy configurations
for file in "$configs"/*; do
  [ -e "$file" ] || continue
  check_config "ConfigMap $(basename "$file")" "$file"
done

# --- systemd -------------------------------------------------------------------------------------
unit=deploy/systemd/eam-proxy.service
unit_config=deploy/systemd/eam-proxy.toml
unit_value() { sed -n "s/^$1=//p" "$unit"; }
toml_value() {
  "${py:-python3}" - "$1" "$2" <<'EOF'
import sys
try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib
value = tomllib.load(open(sys.argv[1], "rb"))
for part in sys.argv[2].split("."):
    value = value.get(part, {}) if isinstance(value, dict) else {}
print("" if value == {} else value)
EOF
}
if ! command -v systemd-analyze >/dev/null 2>&1; then
  apt_install systemd || true
fi
unit_copy="$work/eam-proxy.service"
if [ -n "$bin" ]; then
  sed "s#/usr/local/bin/eam-proxy#$bin#g" "$unit" >"$unit_copy"
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  skip "systemd-analyze verify $unit" "systemd-analyze not available"
elif [ -z "$bin" ]; then
  fail "systemd-analyze verify $unit" "no binary"
else
  # verify exits 0 on unknown keys too: any output is a failure.
  if out=$(systemd-analyze verify "$unit_copy" 2>&1) && [ -z "$out" ]; then
    pass "systemd-analyze verify $unit"
  else
    fail "systemd-analyze verify $unit" "$out"
  fi
  check "systemd-analyze security $unit: exposure <= 2.0" \
    systemd-analyze security --offline=yes --threshold=20 "$unit_copy"
fi
sysusers() {
  local root="$work/sysroot"
  mkdir -p "$root/etc"
  systemd-sysusers --root="$root" "$repo/deploy/systemd/eam-proxy.sysusers" >/dev/null &&
    grep -q "^$(unit_value User):" "$root/etc/passwd" && grep -q "^$(unit_value Group):" "$root/etc/group"
}
if command -v systemd-sysusers >/dev/null 2>&1; then
  check "systemd-sysusers creates the unit's User= and Group= (deploy/systemd/eam-proxy.sysusers)" sysusers
else
  skip "systemd-sysusers deploy/systemd/eam-proxy.sysusers" "systemd-sysusers not available"
fi
pid_file=$(toml_value "$unit_config" server.pid_file)
upgrade_sock=$(toml_value "$unit_config" server.upgrade_sock)
grace=$(toml_value "$unit_config" server.grace_period_seconds)
runtime_dir=/run/$(unit_value RuntimeDirectory)
check "systemd: PIDFile= is server.pid_file of $unit_config" test "$(unit_value PIDFile)" = "$pid_file"
check "systemd: pid file and upgrade socket in RuntimeDirectory $runtime_dir" \
  test "$(dirname "$pid_file")" = "$runtime_dir" -a "$(dirname "$upgrade_sock")" = "$runtime_dir"
stop_timeout=$(unit_value TimeoutStopSec)
check "systemd: TimeoutStopSec=$stop_timeout > grace_period_seconds ($grace) + 5" \
  test "${stop_timeout%s}" -gt $((${grace:-10} + 5))
check "systemd: ExecStartPre checks the configuration" grep -q '^ExecStartPre=.* --check' "$unit"
reload_checks_first() { unit_value ExecReload | head -n 1 | grep -q -- '--check'; }
check "systemd: ExecReload checks the configuration before the upgrade" reload_checks_first

# Smoke run of the unit's commands outside systemd: start (daemon), reload (zero-downtime upgrade)
# under a stream of requests, stop (SIGTERM). The configuration is the unit's, on free local
# ports, with the key set from the test fixtures (no network).
# shellcheck source=tests/lib/loopback.sh
. tests/lib/loopback.sh
# run_unit_command LINE CONFIG: one Exec line of the unit, with the binary, $MAINPID and the config.
run_unit_command() {
  local line=$1 config=$2 word words args=()
  read -ra words <<<"$line"
  for word in "${words[@]}"; do
    case "$word" in
      /usr/local/bin/eam-proxy) args+=("$bin") ;;
      \$MAINPID) args+=("$(cat "$smoke_run/eam-proxy.pid")") ;;
      *) args+=("$word") ;;
    esac
  done
  EAM_PROXY_CONFIG=$config "${args[@]}" >>"$smoke_run/proxy.log" 2>&1
}
smoke() {
  local proxy_port admin_port upstream_port config old new refused served upstream loop code at
  smoke_run="$work/run"
  mkdir -p "$smoke_run/www"
  read -r proxy_port admin_port upstream_port < <(free_ports 3)
  config="$smoke_run/eam-proxy.toml"
  sed -e "s#^listen = .*#listen = [\"127.0.0.1:$proxy_port\"]#" \
    -e "s#^admin_listen = .*#admin_listen = \"127.0.0.1:$admin_port\"#" \
    -e "s#^addresses = .*#addresses = [\"127.0.0.1:$upstream_port\"]#" \
    -e "s#^health_check_path = .*#health_check_path = \"/\"#" \
    -e "s#^grace_period_seconds = .*#grace_period_seconds = 1#" \
    -e "s#^level = .*#level = \"warn\"#" \
    -e "s#/run/eam-proxy/#$smoke_run/#g" "$unit_config" >"$config"
  printf '\n[clouds.global]\njwks_file = "%s"\n' "$repo/tests/fixtures/keys/public.jwks.json" >>"$config"
  # A stand-in IdP, so that proxied requests are answered by an upstream (200).
  echo ok >"$smoke_run/www/index.html"
  python3 -m http.server --bind 127.0.0.1 --directory "$smoke_run/www" "$upstream_port" >"$smoke_run/upstream.log" 2>&1 &
  upstream=$!
  disown "$upstream"
  smoke_pids+=("$upstream")

  while IFS= read -r line; do
    run_unit_command "$line" "$config" || { smoke_failed "ExecStartPre failed: $line"; return 1; }
  done < <(unit_value ExecStartPre)
  run_unit_command "$(unit_value ExecStart)" "$config" || { smoke_failed "ExecStart failed"; return 1; }
  for _ in $(seq 100); do
    [ -s "$smoke_run/eam-proxy.pid" ] && curl -sf -o /dev/null "http://127.0.0.1:$admin_port/readyz" && break
    sleep 0.2
  done
  old=$(cat "$smoke_run/eam-proxy.pid" 2>/dev/null)
  [ -n "$old" ] && smoke_pids+=("$old")
  curl -sf -o /dev/null "http://127.0.0.1:$admin_port/readyz" || { smoke_failed "not ready 20 s after start"; return 1; }

  # Requests all through the reload, to the admin listener and through the proxy port.
  (
    end=$((SECONDS + 12))
    while [ $SECONDS -lt $end ]; do
      for url in "http://127.0.0.1:$admin_port/healthz" "http://127.0.0.1:$proxy_port/index.html"; do
        at=$(date +%T.%N)
        code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$url")
        echo "$at $code (curl exit $?) $url"
      done
      sleep 0.05
    done
  ) >"$smoke_run/codes" &
  loop=$!
  sleep 0.5
  while IFS= read -r line; do
    run_unit_command "$line" "$config" || { smoke_failed "ExecReload failed: $line"; kill "$loop"; return 1; }
  done < <(unit_value ExecReload)
  for _ in $(seq 100); do
    new=$(cat "$smoke_run/eam-proxy.pid" 2>/dev/null)
    [ -n "$new" ] && [ "$new" != "$old" ] && ! kill -0 "$old" 2>/dev/null && break
    sleep 0.2
  done
  [ -n "$new" ] && smoke_pids+=("$new")
  wait "$loop"
  refused=$(grep -vc ' 200 ' "$smoke_run/codes")
  served=$(grep -c ' 200 ' "$smoke_run/codes")
  if [ "$new" = "$old" ] || kill -0 "$old" 2>/dev/null; then
    smoke_failed "the upgrade did not replace process $old (pid file: $new)"; return 1
  fi
  if [ "$refused" -ne 0 ] || [ "$served" -lt 20 ]; then
    grep -v ' 200 ' "$smoke_run/codes" | head -n 5
    smoke_failed "during the reload: $served answered 200, $refused did not"; return 1
  fi
  curl -sf -o /dev/null "http://127.0.0.1:$admin_port/readyz" || { smoke_failed "new process $new not ready"; return 1; }
  kill -TERM "$new"
  for _ in $(seq $((${stop_timeout%s} * 5))); do
    kill -0 "$new" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$new" 2>/dev/null; then smoke_failed "still running ${stop_timeout} after SIGTERM"; return 1; fi
  kill "$upstream" 2>/dev/null
  echo "reload: $served requests answered 200, none failed; process $old -> $new; stopped by SIGTERM"
}
# smoke_failed REASON: the proxy's last log lines, then the reason (last, where fail() shows it).
smoke_failed() {
  echo "--- eam-proxy log (last lines):"
  tail -n 12 "$smoke_run/proxy.log" 2>/dev/null
  echo "$1"
}
if [ -z "$bin" ]; then
  fail "systemd smoke: start, reload (zero-downtime upgrade), stop" "no binary"
elif ! command -v curl >/dev/null 2>&1; then
  skip "systemd smoke: start, reload (zero-downtime upgrade), stop" "curl not installed"
else
  # Not through check(): smoke must run in this shell, so that cleanup knows its processes.
  if smoke >"$work/smoke.out" 2>&1; then
    pass "systemd smoke: start, reload (zero-downtime upgrade) under load, stop: $(tail -n 1 "$work/smoke.out")"
  else
    fail "systemd smoke: start, reload (zero-downtime upgrade) under load, stop" "$(cat "$work/smoke.out")"
  fi
fi

# --- docs/DEPLOYING.md names only files that exist ------------------------------------------------
if [ -f docs/DEPLOYING.md ]; then
  missing=""
  while IFS= read -r path; do
    path=${path%.}
    [ -e "$path" ] || missing="$missing $path"
  done < <(grep -oE '(^|[ `(])(deploy|config|docs|tests)/[A-Za-z0-9_./-]*[A-Za-z0-9_/-]' docs/DEPLOYING.md |
    sed -E 's/^[ `(]//' | sort -u)
  check "docs/DEPLOYING.md names only existing files" test -z "$missing"
  [ -z "$missing" ] || echo "      missing:$missing"
else
  fail "docs/DEPLOYING.md exists"
fi

# --- The release build recipe (CI) ---------------------------------------------------------------
# On a quiet 2-core machine the release build (thin LTO, one codegen unit) takes several minutes.
release=${EAM_BUILD_RELEASE:-}
[ -n "$release" ] || { [ "${CI:-}" = true ] && release=1; }
if [ "$release" = 1 ]; then
  stage="$work/stage"
  if out=$(bash deploy/build.sh "$stage" 2>&1); then
    pass "deploy/build.sh (cargo build --release --locked -p eam-proxy, staged tree)"
    # Every path the runtime stage copies out of the build stage's /out exists.
    while IFS= read -r src; do
      check "Dockerfile COPY --from=build $src exists in the staged tree" test -e "$stage${src#/out}"
    done < <(sed -n 's#^COPY --from=build \(/out/[^ ]*\) .*#\1#p' deploy/Dockerfile)
    check "staged binary runs: --version" "$stage/usr/local/bin/eam-proxy" --version
    check "staged binary: eam-proxy --check /etc/eam-proxy/eam-proxy.toml" \
      "$stage/usr/local/bin/eam-proxy" --check --config "$stage/etc/eam-proxy/eam-proxy.toml"
    check "staged licence notice and third-party list" \
      test -s "$stage/usr/local/share/doc/eam-proxy/NOTICE" -a -s "$stage/usr/local/share/doc/eam-proxy/THIRD-PARTY-LICENSES.tsv"
    # The runtime image (distroless/cc) has glibc and libgcc, nothing else: no libssl & co.
    libs=$(ldd "$stage/usr/local/bin/eam-proxy" 2>&1 | awk '/=>/ {print $1}' | sort -u | tr '\n' ' ')
    extra=$(tr ' ' '\n' <<<"$libs" | grep -vE '^(libc|libm|libgcc_s|libdl|libpthread|librt)\.so' | grep -v '^$')
    check "release binary needs only glibc and libgcc ($libs)" test -z "$extra"
  else
    fail "deploy/build.sh (cargo build --release --locked -p eam-proxy, staged tree)" "$out"
  fi
else
  skip "deploy/build.sh release build" "runs when CI=true (unless EAM_BUILD_RELEASE=0) or EAM_BUILD_RELEASE=1"
fi

echo "deploy: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
