# shellcheck shell=bash
# Sourced (not run) by the scripts that install what the tests need: tests/run.sh, tests/demo.sh,
# tests/zoo/install.sh and tests/fidelity/install.sh, so that all of them pick Debian packages,
# call apt-get and skip finished steps the same way.
#
# The caller sets `who` (what its messages start with) and, before any `stamped` step, `build`
# (the folder whose stamps/ records the steps). The want_* functions add to `packages`;
# install_wanted installs those, as root or through sudo.

: "${who:?the script that sources tests/lib/deps.sh sets who}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
packages=()

# want_tools TOOL...: the Debian package of each TOOL that is not on PATH.
want_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 && continue
    case "$tool" in
      cc) packages+=(gcc libc6-dev) ;;
      node) packages+=(nodejs) ;;
      javac) packages+=(default-jdk-headless) ;;
      *) packages+=("$tool") ;;
    esac
  done
}

# want_packages PACKAGE...: each PACKAGE that dpkg does not list as installed. For libraries,
# which put no command on PATH.
want_packages() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
      packages+=("$pkg")
  done
}

# CHROMIUM_PATH names a browser of the user's own: then Debian's is not needed.
want_chromium() {
  [ -n "${CHROMIUM_PATH:-}" ] || [ -x /usr/bin/chromium ] || packages+=(chromium)
}

# The venvs are made from Debian's python3, not whatever python3 comes first on PATH (a pyenv
# shim, say), so that the pinned wheels match the interpreter CI has.
want_debian_venv() {
  if [ ! -x /usr/bin/python3 ]; then
    packages+=(python3 python3-venv)
  elif ! /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    packages+=(python3-venv)
  fi
}

install_wanted() {
  [ ${#packages[@]} -gt 0 ] || return 0
  echo "$who: installing ${packages[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >/dev/null
  packages=()
}

# oidc-provider 9 (tests/e2e) calls URL.parse and crypto.hash, which came with Node.js 20.18.
node_new_enough() {
  node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 18) ? 0 : 1)'
}

# npm_ci DIR: exactly what DIR's package-lock.json says, quietly.
npm_ci() {
  (cd "$1" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

# stamped NAME RESULT ACTION INPUT...: runs ACTION, then records the hash of the inputs (file
# contents, or the text of an argument that is not a file) as NAME's stamp; skipped while RESULT
# (what ACTION makes) exists and the stamp matches, so a changed input redoes the step.
stamp_hash() {
  local x
  for x in "$@"; do
    if [ -f "$x" ]; then sha256sum "$x"; else echo "$x"; fi
  done | sha256sum | cut -d' ' -f1
}
stamped() {
  local name=$1 result=$2 action=$3
  shift 3
  local stamp=${build:?}/stamps/$name
  if [ -e "$result" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(stamp_hash "$@")" ]; then
    echo "$who: $name up to date" >&2
    return
  fi
  "$action"
  mkdir -p "$build/stamps"
  stamp_hash "$@" >"$stamp"
}

# debian_venv REQUIREMENTS: the venv at $build/venv, with the pinned packages of REQUIREMENTS.
debian_venv() {
  local requirements=$1
  stamped venv "$build/venv/bin/python" make_venv "$requirements" "$(/usr/bin/python3 --version)"
}
# Called by debian_venv's `stamped`: requirements is debian_venv's.
make_venv() {
  echo "$who: venv from $requirements" >&2
  rm -rf "$build/venv"
  /usr/bin/python3 -m venv "$build/venv"
  "$build/venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
}

# node_modules STAMP DIR RESULT: `npm ci` in DIR unless RESULT (a path under DIR/node_modules)
# is there and the lock file and Node.js version are those of the last run.
node_modules() {
  local dir=$2
  stamped "$1" "$3" npm_ci_step "$dir/package.json" "$dir/package-lock.json" "node $(node --version)"
}
# Called by node_modules' `stamped`: dir is node_modules'.
npm_ci_step() {
  echo "$who: npm ci ($dir)" >&2
  npm_ci "$dir"
}
