#!/usr/bin/env bash
# Installs and builds the parser zoo (tests/zoo) on a bare Debian 12 machine; idempotent.
#
#   bash tests/zoo/install.sh
#
# Debian packages (only the missing ones): Tomcat 10.1, Jetty 9.4, a JDK if javac is missing,
# PHP 8.2 CLI, Rack 2.2 + WEBrick, Go 1.19, Node.js/npm and python3-venv when absent. Then, each
# step skipped while its stamp (a hash of its inputs) is unchanged: `npm ci` in tests/zoo/express,
# a venv at tests/zoo/.build/venv from tests/zoo/requirements.txt, the two Java echo servers
# (javac into tests/zoo/.build/java/) and the Go echo server (tests/zoo/.build/bin/go-echo, stdlib
# only, offline, GOCACHE/GOPATH inside .build). Runs as root, or with sudo for apt-get.
set -euo pipefail
zoo=$(cd "$(dirname "$0")" && pwd)
build=$zoo/.build
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
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

packages=()
for pkg in libtomcat10-java libjetty9-java php-cli ruby-rack ruby-webrick golang-go; do
  installed "$pkg" || packages+=("$pkg")
done
command -v javac >/dev/null 2>&1 || packages+=(default-jdk-headless)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
# The venv is made from Debian's python3 (not whatever python3 comes first on PATH).
if [ ! -x /usr/bin/python3 ]; then
  packages+=(python3 python3-venv)
elif ! /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  packages+=(python3-venv)
fi
if [ ${#packages[@]} -gt 0 ]; then
  echo "tests/zoo/install.sh: installing ${packages[*]}" >&2
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

# Express: exactly what package-lock.json says.
express_in=("$zoo/express/package.json" "$zoo/express/package-lock.json" "node $(node --version)")
if [ -d "$zoo/express/node_modules" ] && stamp_ok express "${express_in[@]}"; then
  echo "tests/zoo/install.sh: express up to date" >&2
else
  echo "tests/zoo/install.sh: npm ci (tests/zoo/express)" >&2
  (cd "$zoo/express" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  stamp_set express "${express_in[@]}"
fi

# Python venv: Django, gunicorn, Werkzeug (+ h2, PyJWT for the test driver).
venv_in=("$zoo/requirements.txt" "$(/usr/bin/python3 --version)")
if [ -x "$build/venv/bin/python" ] && stamp_ok venv "${venv_in[@]}"; then
  echo "tests/zoo/install.sh: venv up to date" >&2
else
  echo "tests/zoo/install.sh: venv from requirements.txt" >&2
  rm -rf "$build/venv"
  /usr/bin/python3 -m venv "$build/venv"
  "$build/venv/bin/pip" install -q --disable-pip-version-check -r "$zoo/requirements.txt"
  stamp_set venv "${venv_in[@]}"
fi

# Java: compile against Debian's jars; the runtime classpath goes into classpath.txt for
# servers.py. The jar list is resolved to versioned file names so a package upgrade rebuilds.
java_build() {
  local name=$1 src=$2
  shift 2
  local jars=() j
  for j in "$@"; do jars+=("$(readlink -f "/usr/share/java/$j.jar")"); done
  local cp
  cp=$(IFS=:; echo "${jars[*]}")
  local out=$build/java/$name
  local in=("$zoo/echo/ZooJson.java" "$zoo/echo/$src" "$cp" "$(javac -version 2>&1)")
  if [ -f "$out/classpath.txt" ] && stamp_ok "java-$name" "${in[@]}"; then
    echo "tests/zoo/install.sh: $name echo up to date" >&2
    return
  fi
  echo "tests/zoo/install.sh: javac $src" >&2
  rm -rf "$out"
  mkdir -p "$out/classes"
  javac -d "$out/classes" -cp "$cp" "$zoo/echo/ZooJson.java" "$zoo/echo/$src"
  echo "$out/classes:$cp" >"$out/classpath.txt"
  stamp_set "java-$name" "${in[@]}"
}
java_build tomcat TomcatEcho.java tomcat10-catalina tomcat10-coyote tomcat10-util tomcat10-util-scan \
  tomcat10-juli tomcat10-api tomcat10-servlet-api tomcat10-jaspic-api tomcat10-annotations-api tomcat10-jni
java_build jetty JettyEcho.java jetty9-server jetty9-servlet jetty9-http jetty9-io jetty9-util \
  jetty9-security servlet-api

# Go: stdlib only, no network, no cgo (so no C compiler is needed).
go_in=("$zoo/echo/echo.go" "$(go version)")
if [ -x "$build/bin/go-echo" ] && stamp_ok go "${go_in[@]}"; then
  echo "tests/zoo/install.sh: go echo up to date" >&2
else
  echo "tests/zoo/install.sh: go build echo.go" >&2
  mkdir -p "$build/bin"
  (cd "$zoo/echo" && env GOCACHE="$build/go/cache" GOPATH="$build/go/path" GOPROXY=off GOFLAGS= \
    GO111MODULE= CGO_ENABLED=0 go build -o "$build/bin/go-echo" echo.go)
  stamp_set go "${go_in[@]}"
fi
echo "tests/zoo/install.sh: done" >&2
