#!/usr/bin/env bash
# Checks the monitoring artefacts of deploy/monitoring/ with the real tools:
#   - promtool (Debian's `prometheus` package, installed when missing): the alert rules, their unit
#     tests (alerts_test.yml), the example prometheus.yml, and every dashboard expression;
#   - the dashboard's structure, and every metric name, label and closed-set label value used by
#     the dashboard and the rules against the /metrics of a running eam-proxy (and that this
#     comparison catches deliberate mistakes);
#   - end to end: eam-proxy on loopback in front of a loopback upstream, a real Prometheus server
#     scraping its admin listener every second with alerts.yml loaded, known traffic through the
#     proxy, and Prometheus's query API returning eam_requests_total with the traffic's counts,
#     data for every dashboard query (with the labels its legend names), healthy rules, and
#     EamProxyDown pending for a dead target of the job.
# Ends with `monitoring: N passed, M failed`; exits non-zero when anything failed.
#
# Environment: EAM_PROXY_BIN (use this binary instead of building), MONITORING_TIMEOUT (seconds
# to wait for Prometheus, default 60), MONITORING_KEEP=1 (keep the temporary directory).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
timeout_s=${MONITORING_TIMEOUT:-60}
passed=0
failed=0
pids=()
policy_rc_created=""
work=$(mktemp -d "${TMPDIR:-/tmp}/eam-monitoring.XXXXXX")

# shellcheck disable=SC2329 # invoked by the EXIT trap
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  [ -n "$policy_rc_created" ] && rm -f "$policy_rc_created"
  if [ "${MONITORING_KEEP:-0}" = 1 ]; then
    echo "monitoring: kept $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$SECONDS
step_start=$SECONDS
begin() { step_start=$SECONDS; echo "--- $*"; }
ok() { passed=$((passed + 1)); echo "ok   $* ($((SECONDS - step_start)) s)"; }
bad() { failed=$((failed + 1)); echo "FAIL $* ($((SECONDS - step_start)) s)" >&2; }
# run NAME COMMAND...: one check, its output indented.
run() {
  local name=$1
  shift
  begin "$name"
  if "$@" > "$work/out" 2>&1; then
    sed 's/^/    /' "$work/out"
    ok "$name"
  else
    sed 's/^/    /' "$work/out" >&2
    bad "$name"
  fi
}
finish() {
  echo "monitoring: $passed passed, $failed failed ($((SECONDS - t0)) s)"
  [ "$failed" -eq 0 ]
  exit
}
# free_ports N, wait_http URL SECONDS
# shellcheck source=tests/lib/loopback.sh
. "$root/tests/lib/loopback.sh"

for tool in python3 curl openssl; do
  command -v "$tool" >/dev/null 2>&1 || { bad "$tool is required"; finish; }
done

# ------------------------------------------------------------------ promtool
install_prometheus() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  command -v apt-get >/dev/null 2>&1 || { echo "no apt-get: install promtool yourself"; return 1; }
  # Debian starts a package's service from its postinst. Refuse that for this install (the
  # standard policy-rc.d mechanism) unless the machine already has a policy.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    policy_rc_created=/usr/sbin/policy-rc.d
  fi
  local before
  before=$(pgrep -x prometheus || true)
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus
  local status=$?
  if [ -n "$policy_rc_created" ]; then
    $sudo rm -f "$policy_rc_created"
    policy_rc_created=""
  fi
  # The package's service must not stay running (its default port, 9090, is also the proxy's
  # default admin port). Stop it through its own service manager if it was started anyway.
  local after
  after=$(pgrep -x prometheus || true)
  if [ -n "$after" ] && [ "$after" != "$before" ]; then
    echo "the package started its prometheus service; stopping it"
    if [ -d /run/systemd/system ]; then
      $sudo systemctl stop prometheus.service || true
    else
      $sudo /usr/sbin/invoke-rc.d --force prometheus stop 2>/dev/null \
        || $sudo /etc/init.d/prometheus stop || true
    fi
  fi
  if pgrep -x prometheus >/dev/null && [ "$(pgrep -x prometheus || true)" != "$before" ]; then
    echo "a prometheus service is still running after the install"
  fi
  return "$status"
}

begin "promtool available"
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  ok "promtool available ($(promtool --version 2>&1 | head -1))"
elif install_prometheus > "$work/apt.log" 2>&1 && command -v promtool >/dev/null 2>&1; then
  ok "promtool available: installed Debian's prometheus ($(promtool --version 2>&1 | head -1))"
else
  sed 's/^/    /' "$work/apt.log" >&2
  bad "promtool available: cannot install Debian's prometheus package"
  finish
fi

cd "$here" || exit 1
run "promtool check rules alerts.yml" promtool check rules alerts.yml
run "promtool test rules alerts_test.yml" promtool test rules alerts_test.yml
run "promtool check config prometheus.yml" promtool check config prometheus.yml
run "dashboard JSON and structure" python3 check.py dashboard grafana-dashboard.json "$work"
if [ -f "$work/dashboard-rules.yml" ]; then
  run "promtool parses every dashboard expression" promtool check rules "$work/dashboard-rules.yml"
else
  begin "promtool parses every dashboard expression"
  bad "promtool parses every dashboard expression: no expressions extracted"
fi

# ------------------------------------------------------------------ end to end
cd "$root" || exit 1
begin "build eam-proxy"
if [ -n "${EAM_PROXY_BIN:-}" ]; then
  binary=$EAM_PROXY_BIN
  ok "build eam-proxy: using $binary"
elif cargo build --locked -p eam-proxy > "$work/build.log" 2>&1; then
  binary=${CARGO_TARGET_DIR:-$root/target}/debug/eam-proxy
  ok "build eam-proxy"
else
  tail -n 30 "$work/build.log" >&2
  bad "build eam-proxy"
  finish
fi

read -r upstream_port proxy_port admin_port prom_port dead_port < <(free_ports 5)

begin "upstream and eam-proxy on loopback"
python3 "$here/check.py" upstream "$upstream_port" > "$work/upstream.log" 2>&1 &
pids+=($!)
cat > "$work/eam-proxy.toml" <<EOF
[server]
listen = ["127.0.0.1:$proxy_port"]
admin_listen = "127.0.0.1:$admin_port"
threads = 1
grace_period_seconds = 0
pid_file = "$work/eam-proxy.pid"
upgrade_sock = "$work/eam-proxy-upgrade.sock"

[upstream]
addresses = ["127.0.0.1:$upstream_port"]
connect_timeout_ms = 500
health_check_interval_ms = 500

[log]
format = "json"

[[apps]]
client_id = "56c2b5e3-c41d-4c14-abcf-72d407f57650"
audiences = ["600b719b-3766-4dc5-95a6-3c4a8dc31885"]

[clouds.global]
jwks_file = "$root/tests/fixtures/keys/public.jwks.json"
EOF
"$binary" --config "$work/eam-proxy.toml" > "$work/eam-proxy.stdout" 2> "$work/eam-proxy.log" &
pids+=($!)
if wait_http "http://127.0.0.1:$upstream_port/" 20 && wait_http "http://127.0.0.1:$admin_port/readyz" 30; then
  ok "upstream and eam-proxy on loopback (proxy 127.0.0.1:$proxy_port, admin :$admin_port)"
else
  curl -sS --max-time 2 "http://127.0.0.1:$admin_port/readyz" >&2 || true
  tail -n 20 "$work/eam-proxy.log" >&2
  bad "upstream and eam-proxy on loopback: not ready"
  finish
fi

begin "scrape /metrics"
if curl -fsS --max-time 5 "http://127.0.0.1:$admin_port/metrics" -o "$work/metrics.txt"; then
  ok "scrape /metrics ($(grep -c '^# TYPE' "$work/metrics.txt") families)"
  run "dashboard and rules use only exported metrics and label values" \
    python3 "$here/check.py" names "$work/metrics.txt" "$here/grafana-dashboard.json" "$here/alerts.yml"
  run "the name check catches misspelt metrics, labels and label values" \
    python3 "$here/check.py" selftest "$work/metrics.txt" "$here/grafana-dashboard.json" "$here/alerts.yml"
else
  bad "scrape /metrics"
fi

begin "Prometheus server on loopback"
mkdir -p "$work/prometheus-data"
cat > "$work/prometheus.yml" <<EOF
# Generated by deploy/monitoring/check.sh: the job of prometheus.yml, scraped every second, plus
# a dead target in the same job for EamProxyDown.
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $here/alerts.yml
scrape_configs:
  - job_name: eam-proxy
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:$admin_port", "127.0.0.1:$dead_port"]
EOF
promtool check config "$work/prometheus.yml" > "$work/out" 2>&1 || { cat "$work/out" >&2; }
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus-data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn \
  > "$work/prometheus.log" 2>&1 &
pids+=($!)
if wait_http "http://127.0.0.1:$prom_port/-/ready" 30; then
  ok "Prometheus server on loopback ($(prometheus --version 2>&1 | head -1 | cut -d' ' -f1-3), :$prom_port)"
else
  tail -n 20 "$work/prometheus.log" >&2
  bad "Prometheus server on loopback: not ready"
  finish
fi

run "traffic through the proxy (accepted, rejected, spoofed, pass-through)" \
  python3 "$here/check.py" traffic "127.0.0.1:$proxy_port" "$root"
run "Prometheus query API returns eam_requests_total, dashboard data and healthy rules" \
  python3 "$here/check.py" prometheus "http://127.0.0.1:$prom_port" "$work" "$timeout_s"
if [ "$failed" -gt 0 ]; then
  echo "    last eam-proxy log lines:" >&2
  tail -n 5 "$work/eam-proxy.log" | sed 's/^/    /' >&2
  echo "    prometheus log:" >&2
  tail -n 10 "$work/prometheus.log" | sed 's/^/    /' >&2
fi

finish
