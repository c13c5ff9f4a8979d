#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a bare Debian machine with a Rust toolchain:
# installs what the build and the tests need, builds the workspace, runs every test.
# `--deps-only` installs and stops (CI uses it before its lint gates).
set -euo pipefail
cd "$(dirname "$0")/.."

# Pingora needs cmake (zlib-ng) and perl + make (vendored OpenSSL); curl is used by the tests.
missing=()
for tool in cmake perl make cc curl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}" >&2
  packages=()
  for tool in "${missing[@]}"; do
    case "$tool" in cc) packages+=(gcc libc6-dev) ;; *) packages+=("$tool") ;; esac
  done
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi

[ "${1:-}" = "--deps-only" ] && exit 0

# The end-to-end tests start the real binary: build it before they run.
cargo build --locked --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one result line per binary).
sum() { grep -E '^test result:' "$log" | grep -Eo "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
echo "summary: $(sum passed) passed, $(sum failed) failed, $(sum ignored) skipped"
exit "$status"
