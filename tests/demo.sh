#!/usr/bin/env bash
# The one-command demo, from a fresh clone: builds eam-proxy, installs the Node packages of
# tests/e2e, starts the Entra ID simulator + eam-proxy + oidc-provider on loopback, runs one full
# EAM sign-in without a browser and prints each hop. Exit status 0 when Entra accepts the result.
#
#   bash tests/demo.sh            run once, stop everything
#   bash tests/demo.sh --keep     leave the stack running and print the simulator's URL
#                                 (open it in a browser; Ctrl-C stops everything)
#   bash tests/demo.sh --verbose  also print every process's log lines
#
# Needs: a Rust toolchain; installs cmake/perl/make/cc (Pingora's build) and Node.js/npm with
# apt-get when they are missing. Network: crates.io, the npm registry and Debian's mirrors only.
set -euo pipefail
cd "$(dirname "$0")/.."

who=demo
# shellcheck source=tests/lib/deps.sh
. tests/lib/deps.sh
want_tools cmake perl make cc node npm
install_wanted
if ! node_new_enough; then
  echo "demo: Node.js $(node --version) is too old: tests/e2e needs 20.18 or later" >&2
  exit 1
fi

echo "demo: building eam-proxy (cargo build --locked -p eam-proxy)" >&2
cargo build --locked -q -p eam-proxy
echo "demo: installing the Node packages of tests/e2e (npm ci)" >&2
npm_ci tests/e2e

run_dir=$(mktemp -d)
node_pid=""
cleanup() {
  # Stop the demo (it closes its simulator, provider and proxy), then make sure no proxy it
  # started outlives it, even if node was killed.
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$node_pid" 2>/dev/null || true
  fi
  if [ -s "$run_dir/proxy.pid" ]; then
    pid=$(cat "$run_dir/proxy.pid")
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
  fi
  rm -rf "$run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# In the background so that a signal to this script is handled at once (wait is interruptible).
EAM_PROXY_BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/eam-proxy" EAM_DEMO_PIDFILE="$run_dir/proxy.pid" \
  node tests/e2e/demo.mjs "$@" &
node_pid=$!
set +e
wait "$node_pid"
status=$?
set -e
node_pid=""
exit "$status"
