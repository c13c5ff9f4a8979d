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

who=tests/zoo/install.sh
# shellcheck source=tests/lib/deps.sh
. "$zoo/../lib/deps.sh"

want_packages libtomcat10-java libjetty9-java php-cli ruby-rack ruby-webrick golang-go
want_tools javac node npm
want_debian_venv
install_wanted

# Express: exactly what package-lock.json says.
node_modules express "$zoo/express" "$zoo/express/node_modules"

# Python venv: Django, gunicorn, Werkzeug (+ h2, PyJWT for the test driver).
debian_venv "$zoo/requirements.txt"

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
  stamped "java-$name" "$out/classpath.txt" javac_echo \
    "$zoo/echo/ZooJson.java" "$zoo/echo/$src" "$cp" "$(javac -version 2>&1)"
}
# Called by java_build's `stamped`: name, src, cp and out are java_build's.
javac_echo() {
  echo "$who: javac $src" >&2
  rm -rf "$out"
  mkdir -p "$out/classes"
  javac -d "$out/classes" -cp "$cp" "$zoo/echo/ZooJson.java" "$zoo/echo/$src"
  echo "$out/classes:$cp" >"$out/classpath.txt"
}
java_build tomcat TomcatEcho.java tomcat10-catalina tomcat10-coyote tomcat10-util tomcat10-util-scan \
  tomcat10-juli tomcat10-api tomcat10-servlet-api tomcat10-jaspic-api tomcat10-annotations-api tomcat10-jni
java_build jetty JettyEcho.java jetty9-server jetty9-servlet jetty9-http jetty9-io jetty9-util \
  jetty9-security servlet-api

# Go: stdlib only, no network, no cgo (so no C compiler is needed).
go_echo() {
  echo "$who: go build echo.go" >&2
  mkdir -p "$build/bin"
  (cd "$zoo/echo" && env GOCACHE="$build/go/cache" GOPATH="$build/go/path" GOPROXY=off GOFLAGS= \
    GO111MODULE= CGO_ENABLED=0 go build -o "$build/bin/go-echo" echo.go)
}
stamped go "$build/bin/go-echo" go_echo "$zoo/echo/echo.go" "$(go version)"
echo "$who: done" >&2
