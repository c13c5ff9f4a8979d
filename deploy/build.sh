#!/usr/bin/env bash
# The one build recipe for a release of eam-proxy: the Dockerfile's build stage runs it, CI runs
# it outside a container (tests/run.sh, when CI=true), and a VM install starts from it.
#
#   deploy/build.sh OUT_DIR
#
# builds `cargo build --release --locked -p eam-proxy` and stages a runtime tree under OUT_DIR:
#   OUT_DIR/usr/local/bin/eam-proxy                        the binary
#   OUT_DIR/etc/eam-proxy/eam-proxy.toml                   the commented example configuration
#   OUT_DIR/usr/local/share/doc/eam-proxy/NOTICE           licence notice
#   OUT_DIR/usr/local/share/doc/eam-proxy/THIRD-PARTY-LICENSES.tsv   crate, version, licence, source
# Environment: CARGO_TARGET_DIR is honoured; EAM_BUILD_NO_APT=1 never installs build tools.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR" >&2; exit 64; }
[ $# -eq 1 ] || usage
case "$1" in -h | --help) usage ;; esac
out=$1

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

# Pingora needs cmake (zlib-ng), perl and make (vendored OpenSSL) and a C compiler.
missing=()
for tool in cmake perl make cc; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${EAM_BUILD_NO_APT:-0}" = 1 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "deploy/build.sh: missing build tools: ${missing[*]}" >&2
    exit 1
  fi
  echo "deploy/build.sh: installing ${missing[*]}" >&2
  packages=()
  for tool in "${missing[@]}"; do
    case "$tool" in cc) packages+=(gcc libc6-dev) ;; *) packages+=("$tool") ;; esac
  done
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

cargo build --release --locked -p eam-proxy

target_dir=${CARGO_TARGET_DIR:-$repo/target}
binary="$target_dir/release/eam-proxy"
[ -x "$binary" ] || { echo "deploy/build.sh: $binary was not built" >&2; exit 1; }

doc="$out/usr/local/share/doc/eam-proxy"
install -d -m 0755 "$out/usr/local/bin" "$out/etc/eam-proxy" "$doc"
install -m 0755 "$binary" "$out/usr/local/bin/eam-proxy"
install -m 0644 config/eam-proxy.toml "$out/etc/eam-proxy/eam-proxy.toml"

version=$("$out/usr/local/bin/eam-proxy" --version)
{
  echo "$version"
  echo "Licensed under the Apache License, Version 2.0 (SPDX: Apache-2.0)."
  echo
  echo "This binary statically links the Rust crates listed in THIRD-PARTY-LICENSES.tsv (each"
  echo "under the licence shown there), among them OpenSSL (vendored by openssl-src, Apache-2.0)"
  echo "and AWS-LC (aws-lc-sys: ISC AND (Apache-2.0 OR ISC) AND OpenSSL), and dynamically links"
  echo "the GNU C library and libgcc of the system it runs on."
} >"$doc/NOTICE"
{
  printf 'crate\tversion\tlicense\tsource\n'
  # Crates compiled into the binary, plus the build-time *-src crates that vendor C code into it.
  {
    cargo tree --locked --offline -e normal -p eam-proxy --prefix none --format '{p}	{l}	{r}'
    cargo tree --locked --offline -e normal,build -p eam-proxy --prefix none --format '{p}	{l}	{r}' |
      grep -E '^[a-z0-9_-]+-src v' || true
  } |
    sed -e 's/ (\*)$//' -e 's/ (proc-macro)//' |
    awk -F'\t' '{ split($1, p, " "); if (p[1] != "eam-proxy" && p[1] != "eam-filters") printf "%s\t%s\t%s\t%s\n", p[1], p[2], $2, $3 }' |
    sort -u
} >"$doc/THIRD-PARTY-LICENSES.tsv"
chmod 0644 "$doc/NOTICE" "$doc/THIRD-PARTY-LICENSES.tsv"

echo "deploy/build.sh: staged $version under $out"
