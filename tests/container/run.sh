#!/usr/bin/env bash
# The container suite: builds the real deploy/Dockerfile with buildah (--isolation chroot) from
# base images made here with mmdebstrap (registries cannot be reached: see images.sh), then runs
# the image's ENTRYPOINT and CMD as the image's user, on a read-only root, with a configuration
# mounted at /etc/eam-proxy/eam-proxy.toml, and checks it from outside. docs/DEPLOYING.md
# ("Container image, proven here") says what this proves and what it does not.
#
#   bash tests/container/run.sh
#
# Ends with `container: N passed, N failed[, N skipped]`. Needs root (or password-less sudo):
# mmdebstrap, buildah's chroot isolation and the bind mounts of the run all do; without them the
# suite reports itself skipped. Base images, layers and buildah's storage are kept under
# tests/out/container between runs (EAM_CONTAINER_CACHE moves them), cargo's cache mounts under
# /var/tmp/buildah-cache. A fresh clone makes all of it (timings in docs/DEPLOYING.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
who=tests/container/run.sh

skip() {
  closed=1
  echo "$who: SKIPPED: $*"
  echo "container: 0 passed, 0 failed, 1 skipped"
  exit 0
}

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    # The toolchain the build image copies is the caller's: resolve it before the user changes.
    sysroot=$(rustc +1.95.0 --print sysroot 2>/dev/null || rustc --print sysroot 2>/dev/null || true)
    exec sudo -n env "PATH=$PATH" "EAM_RUST_SYSROOT=$sysroot" \
      "EAM_CONTAINER_CACHE=${EAM_CONTAINER_CACHE:-}" bash "$0" "$@"
  fi
  skip "needs root or password-less sudo (mmdebstrap, buildah --isolation chroot, bind mounts)"
fi

# shellcheck source=tests/lib/deps.sh
. tests/lib/deps.sh
want_tools buildah mmdebstrap curl openssl python3 unshare chroot
install_wanted
command -v buildah >/dev/null 2>&1 || skip "buildah is not installed and apt-get could not install it"

cache=${EAM_CONTAINER_CACHE:-}
cache=${cache:-$repo/tests/out/container}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
# The suite's own buildah storage: its images and layers never mix with the machine's.
bah() { buildah --root "$cache/storage" --runroot "$cache/run" --storage-driver overlay "$@"; }

# From cold: base images ~1.2 GB, the build's layers ~1.5 GB, cargo's cache mounts ~3 GB.
need_gb=8
[ -d "$cache/storage/overlay-images" ] && need_gb=3
free_kb=$(df -Pk "$cache" | awk 'NR == 2 {print $4}')
if [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
  echo "$who: needs $need_gb GB free under $cache, has $((free_kb / 1024)) MB"
  echo "container: 0 passed, 1 failed"
  exit 1
fi

containers=()
scratch=()
pids=()
passed=0
failed=0
closed=0
# shellcheck disable=SC2317,SC2329 # called by the trap
cleanup() {
  local rc=$? c d p
  if [ "$closed" = 0 ]; then
    echo "not ok - the suite stopped early (status $rc)"
    echo "container: $passed passed, $((failed + 1)) failed"
  fi
  for p in "${pids[@]}"; do
    kill -KILL "$p" >/dev/null 2>&1 || true
  done
  for c in "${containers[@]}"; do
    bah umount "$c" >/dev/null 2>&1 || true
    bah rm "$c" >/dev/null 2>&1 || true
  done
  for d in "${scratch[@]}"; do
    umount -R "$d" >/dev/null 2>&1 || true
    rm -rf "$d"
  done
  return 0
}
trap cleanup EXIT

pass() {
  echo "ok - $1"
  passed=$((passed + 1))
}
fail() {
  echo "not ok - $1${2:+: $2}"
  failed=$((failed + 1))
}
finish() {
  closed=1
  echo "container: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

# Can buildah work here at all (storage, mounts)? Otherwise skip with the reason.
if ! probe=$(bah from scratch 2>&1) || ! bah mount "$probe" >/dev/null 2>&1; then
  skip "buildah cannot make containers here: $probe"
fi
containers+=("$probe")

# shellcheck source=tests/container/images.sh
. tests/container/images.sh
rust_image=localhost/eam-standin/rust:1.95-bookworm
runtime_image=localhost/eam-standin/distroless-cc-debian12:nonroot
image=localhost/eam-proxy:container-suite
build_image=localhost/eam-proxy-build:container-suite

# Called at the top level so that errexit holds inside: a failed step ends the suite (the trap
# prints the closing line).
t0=$(date +%s)
make_rust_image "$rust_image"
make_runtime_image "$runtime_image"
pass "base images made from the Debian mirror ($(($(date +%s) - t0)) s)"

t0=$(date +%s)
# --layers: an unchanged context reuses every step; the cache mounts keep the crates.io download
# and cargo's target directory between builds of a changed one. The build stage is tagged too
# (built first with --target, then reused by the full build), so that every image the next run
# can reuse is either tagged or the parent of one, and the untagged rest can be pruned.
build=(--isolation chroot --layers --force-rm -f deploy/Dockerfile
  --ignorefile deploy/Dockerfile.dockerignore
  --build-arg RUST_IMAGE="$rust_image" --build-arg RUNTIME_IMAGE="$runtime_image")
if bah build --quiet "${build[@]}" --target build -t "$build_image" . >"$cache/build.log" 2>&1 &&
  bah build --quiet "${build[@]}" -t "$image" . >>"$cache/build.log" 2>&1; then
  pass "deploy/Dockerfile builds ($(($(date +%s) - t0)) s)"
else
  tail -n 40 "$cache/build.log"
  fail "deploy/Dockerfile builds" "log in $cache/build.log"
  finish
fi
# The context the build stage saw (its /src) left out what deploy/Dockerfile.dockerignore names.
ctx=$(bah from --quiet "$build_image")
containers+=("$ctx")
src="$(bah mount "$ctx")/src"
leaked=""
for path in .git fuzz tests/out target tests/e2e/node_modules; do
  [ ! -e "$src/$path" ] || leaked+=" $path"
done
if [ -f "$src/Cargo.lock" ] && [ -z "$leaked" ]; then
  pass "the build context leaves out what deploy/Dockerfile.dockerignore names"
else
  fail "the build context leaves out what deploy/Dockerfile.dockerignore names" "in /src:${leaked:- no Cargo.lock}"
fi

# Earlier builds and base images, now untagged: each pass frees the parents of the last.
for _ in $(seq 20); do
  stale=$(bah images --quiet --filter dangling=true)
  [ -n "$stale" ] || break
  # shellcheck disable=SC2086 # one ID per word
  bah rmi $stale >/dev/null 2>&1 || break
done

# shellcheck source=tests/container/checks.sh
. tests/container/checks.sh
finish
