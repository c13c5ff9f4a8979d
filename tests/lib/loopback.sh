# shellcheck shell=bash
# Sourced by the shell suites that start servers on loopback (deploy/monitoring/check.sh,
# tests/container/checks.sh): ports to listen on, and the wait until a server answers.

# free_ports N: N distinct loopback ports nobody listens on (bound together, then released).
free_ports() {
  python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# wait_http URL SECONDS: until URL answers 200, or SECONDS have passed (then returns 1).
wait_http() {
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}
