#!/usr/bin/env bash
# Installs what the fidelity suite (tests/fidelity) needs on a bare Debian 12 machine; idempotent.
#
#   bash tests/fidelity/install.sh
#
# Debian packages (only the missing ones): nginx-light (the reference proxy, as bench/run installs
# it), curl, openssl, chromium (unless CHROMIUM_PATH names one), Node.js/npm, python3-venv. Then,
# each step skipped while its stamp (a hash of its inputs) is unchanged: a venv at
# tests/fidelity/.build/venv from tests/fidelity/requirements.txt (Debian's /usr/bin/python3), and
# `npm ci` in tests/e2e, whose playwright-core drives chromium. Runs as root, or with sudo for
# apt-get.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
e2e=$(cd "$here/../e2e" && pwd)
build=$here/.build
mkdir -p "$build"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

packages=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx-light)
command -v curl >/dev/null 2>&1 || packages+=(curl)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
[ -n "${CHROMIUM_PATH:-}" ] || [ -x /usr/bin/chromium ] || packages+=(chromium)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
# The venv is made from Debian's python3 (not whatever python3 comes first on PATH).
if [ ! -x /usr/bin/python3 ]; then
  packages+=(python3 python3-venv)
elif ! /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  packages+=(python3-venv)
fi
if [ ${#packages[@]} -gt 0 ]; then
  echo "tests/fidelity/install.sh: installing ${packages[*]}" >&2
  apt_install "${packages[@]}"
fi

# stamp_ok NAME INPUT...: true when the hash of the inputs (file contents, or the text of an
# argument that is not a file) equals the one recorded for NAME; stamp_set NAME records it.
stamp_hash() {
  local x
  for x in "$@"; do
    if [ -f "$x" ]; then sha256sum "$x"; else echo "$x"; fi
  done | sha256sum | cut -d' ' -f1
}
stamp_ok() {
  local name=$1
  shift
  [ -f "$build/stamps/$name" ] && [ "$(cat "$build/stamps/$name")" = "$(stamp_hash "$@")" ]
}
stamp_set() {
  local name=$1
  shift
  mkdir -p "$build/stamps"
  stamp_hash "$@" >"$build/stamps/$name"
}

# Python venv: the clients (requests, httpx + h2, websockets) and werkzeug.
venv_in=("$here/requirements.txt" "$(/usr/bin/python3 --version)")
if [ -x "$build/venv/bin/python" ] && stamp_ok venv "${venv_in[@]}"; then
  echo "tests/fidelity/install.sh: venv up to date" >&2
else
  echo "tests/fidelity/install.sh: venv from requirements.txt" >&2
  rm -rf "$build/venv"
  /usr/bin/python3 -m venv "$build/venv"
  "$build/venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
  stamp_set venv "${venv_in[@]}"
fi

# tests/e2e's Node packages (playwright-core for the Chromium case): exactly its lock file.
e2e_in=("$e2e/package.json" "$e2e/package-lock.json" "node $(node --version)")
if [ -d "$e2e/node_modules/playwright-core" ] && stamp_ok e2e-node-modules "${e2e_in[@]}"; then
  echo "tests/fidelity/install.sh: tests/e2e node_modules up to date" >&2
else
  echo "tests/fidelity/install.sh: npm ci (tests/e2e)" >&2
  (cd "$e2e" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  stamp_set e2e-node-modules "${e2e_in[@]}"
fi
echo "tests/fidelity/install.sh: done" >&2
