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

who=tests/fidelity/install.sh
# shellcheck source=tests/lib/deps.sh
. "$here/../lib/deps.sh"

# nginx sits in /usr/sbin, which a user's PATH may lack.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx-light)
want_tools curl openssl
want_chromium
want_tools node npm
want_debian_venv
install_wanted

# Python venv: the clients (requests, httpx + h2, websockets) and werkzeug.
debian_venv "$here/requirements.txt"

# tests/e2e's Node packages (playwright-core for the Chromium case): exactly its lock file.
node_modules e2e-node-modules "$e2e" "$e2e/node_modules/playwright-core"
echo "$who: done" >&2
