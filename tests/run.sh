#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a bare Debian machine with a Rust toolchain:
# installs what the build and the tests need, builds the workspace, runs every test suite and
# ends with one line: `summary: N passed, N failed, N skipped` (exit status non-zero on failure).
#
#   bash tests/run.sh              everything
#   bash tests/run.sh --deps-only  install the tools and stop (CI does this before its lint gates)
#
# Suites: cargo tests (unit, property and end-to-end against the real binary), tests/e2e (real
# oidc-provider and headless chromium), tests/zoo (the parser differential test: real framework
# parsers behind the real binary over HTTP/1.1 and HTTP/2; EAM_ZOO_CASES random cases per
# framework, 1000 by default), tests/fidelity (pass-through compared with nginx and direct to a
# recording upstream), deploy/validate.sh (manifests, unit, configs; with CI=true
# also the release build recipe), deploy/monitoring/check.sh (promtool, a real Prometheus),
# tests/container (the real deploy/Dockerfile built with buildah and run as its user; needs root
# or password-less sudo), and a 30-second soak (bench/soak) and the benchmark's smoke mode
# (bench/run --smoke). EAM_SKIP_E2E=1, EAM_SKIP_ZOO=1, EAM_SKIP_FIDELITY=1, EAM_SKIP_DEPLOY=1,
# EAM_SKIP_MONITORING=1, EAM_SKIP_CONTAINER=1, EAM_SKIP_SOAK=1, EAM_SKIP_BENCH=1 skip a suite.
set -euo pipefail
cd "$(dirname "$0")/.."

who=tests/run.sh
# shellcheck source=tests/lib/deps.sh
. tests/lib/deps.sh

# Pingora needs cmake (zlib-ng) and perl + make (vendored OpenSSL); the end-to-end tests call
# curl, openssl and python3; tests/e2e needs Node.js, Debian's chromium and nginx (the balancer
# in front of the replicas of tests/e2e/replicas.test.mjs; in /usr/sbin, which PATH may lack).
want_tools cmake perl make cc curl openssl python3 node npm
if [ "${EAM_SKIP_E2E:-0}" != 1 ]; then
  want_chromium
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx-light)
fi
# tests/container: buildah builds the Dockerfile, mmdebstrap makes its base images.
[ "${EAM_SKIP_CONTAINER:-0}" = 1 ] || want_tools buildah mmdebstrap
install_wanted
# The parser zoo: Tomcat, Jetty, PHP, Rack, Express, Django, werkzeug, Go (idempotent).
[ "${EAM_SKIP_ZOO:-0}" = 1 ] || bash tests/zoo/install.sh
# The fidelity suite: nginx-light, chromium, a venv of pinned clients (idempotent).
[ "${EAM_SKIP_FIDELITY:-0}" = 1 ] || bash tests/fidelity/install.sh
[ "${1:-}" = "--deps-only" ] && exit 0

log=$(mktemp)
trap 'rm -f "$log"' EXIT
passed=0
failed=0
skipped=0

# Runs one suite that prints its own closing line `NAME: N passed, N failed[, N skipped]`, and
# adds its counts. A suite that fails without such a line counts as one failure.
suite() {
  local name=$1
  shift
  local out rc line p f s
  out=$(mktemp)
  set +e
  "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  set -e
  line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed" "$out" | tail -n 1 || true)
  rm -f "$out"
  p=$(echo "$line" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' || echo 0)
  f=$(echo "$line" | grep -Eo '[0-9]+ failed' | grep -Eo '[0-9]+' || echo 0)
  s=$(echo "$line" | grep -Eo '[0-9]+ skipped' | grep -Eo '[0-9]+' || echo 0)
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "tests/run.sh: $name exited with status $rc" >&2
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
  skipped=$((skipped + s))
}

finish() {
  echo "summary: $passed passed, $failed failed, $skipped skipped"
  [ "$failed" -eq 0 ]
}

# The end-to-end tests start the real binary: build it before they run.
if ! cargo build --locked --workspace --bins; then
  failed=$((failed + 1))
  finish
  exit 1
fi
bin_dir="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug"

# Cargo prints one `test result:` line per test binary.
set +e
cargo test --locked --workspace --no-fail-fast 2>&1 | tee "$log"
cargo_status=${PIPESTATUS[0]}
set -e
cargo_sum() { grep -E '^test result:' "$log" | grep -Eo "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
passed=$((passed + $(cargo_sum passed)))
failed=$((failed + $(cargo_sum failed)))
skipped=$((skipped + $(cargo_sum ignored)))
if [ "$cargo_status" -ne 0 ] && [ "$(cargo_sum failed)" -eq 0 ]; then
  echo "tests/run.sh: cargo test exited with status $cargo_status" >&2
  failed=$((failed + 1))
fi

# tests/e2e: node's TAP reporter closes with `# pass N`, `# fail N`, `# cancelled N`, `# skipped N`.
e2e() {
  if ! node_new_enough; then
    echo "tests/e2e needs Node.js 20.18 or later, found $(node --version)"
    return 1
  fi
  npm_ci tests/e2e || return 1
  local out rc
  out=$(mktemp)
  set +e
  (cd tests/e2e && EAM_PROXY_BIN="$bin_dir/eam-proxy" node --test --test-reporter=tap) 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  set -e
  tap() { grep -E "^# $1 [0-9]+$" "$out" | awk '{s += $3} END {print s + 0}'; }
  echo "e2e: $(tap pass) passed, $(($(tap fail) + $(tap cancelled))) failed, $(($(tap skipped) + $(tap todo))) skipped"
  rm -f "$out"
  return "$rc"
}
[ "${EAM_SKIP_E2E:-0}" = 1 ] || suite e2e e2e

# tests/zoo: ends with `zoo: N passed, N failed`; prints its seed (replay with --seed).
[ "${EAM_SKIP_ZOO:-0}" = 1 ] || suite zoo tests/zoo/.build/venv/bin/python tests/zoo/differential.py \
  --cases "${EAM_ZOO_CASES:-1000}" --proxy-bin "$bin_dir/eam-proxy"

# tests/fidelity: ends with `fidelity: N passed, N failed[, N skipped]` (about 40 s).
[ "${EAM_SKIP_FIDELITY:-0}" = 1 ] || suite fidelity tests/fidelity/.build/venv/bin/python \
  tests/fidelity/fidelity.py --proxy-bin "$bin_dir/eam-proxy"

[ "${EAM_SKIP_DEPLOY:-0}" = 1 ] || suite deploy bash deploy/validate.sh

[ "${EAM_SKIP_MONITORING:-0}" = 1 ] ||
  suite monitoring env EAM_PROXY_BIN="$bin_dir/eam-proxy" bash deploy/monitoring/check.sh

# tests/container: ends with `container: N passed, N failed[, N skipped]`; skipped, with the
# reason, where buildah cannot work. 9 minutes from cold on 2 quiet cores, 22 on busy ones
# (docs/DEPLOYING.md), seconds when cached.
[ "${EAM_SKIP_CONTAINER:-0}" = 1 ] || suite container bash tests/container/run.sh

# A command that passes or fails as a whole, counted as one test named NAME.
one_test() {
  local name=$1
  shift
  if "$@"; then
    echo "$name: 1 passed, 0 failed"
  else
    echo "$name: 0 passed, 1 failed"
    return 1
  fi
}

# Issue 8's soak in its CI length: mixed valid/invalid/pass-through load at 200 req/s for 30 s.
[ "${EAM_SKIP_SOAK:-0}" = 1 ] || suite soak one_test soak bash bench/soak --seconds 30

# Issue 7's benchmark in its smoke mode: every scenario for about a second, release build, no
# figures written; fails when a request fails or a decision is not the expected one.
[ "${EAM_SKIP_BENCH:-0}" = 1 ] || suite bench one_test bench bash bench/run --smoke

finish
