# shellcheck shell=bash
# Sourced by tests/container/run.sh: the two base images deploy/Dockerfile takes as RUST_IMAGE and
# RUNTIME_IMAGE, made here from Debian's package mirror because registries cannot be reached.
# Each is committed with an annotation holding the hash of its recipe (the code of the function
# that makes it, its package list, mirrors, toolchain and CA bundle), so a rerun reuses it and a
# changed recipe remakes it. Needs `bah` (buildah with the suite's storage).

: "${who:?sourced by tests/container/run.sh}"
suite=bookworm
mirrors=(
  "deb http://deb.debian.org/debian $suite main"
  "deb http://deb.debian.org/debian $suite-updates main"
  "deb http://deb.debian.org/debian-security $suite-security main"
)

# What rust:1.95-bookworm (buildpack-deps:bookworm) has that a build can use: compilers, make,
# perl, pkg-config, git, curl. Not cmake: the official image lacks it, so deploy/build.sh's
# apt-get path runs here as it does there.
rust_packages=ca-certificates,curl,git,gcc,g++,libc6-dev,make,perl,pkg-config,libssl-dev,zlib1g-dev,dpkg-dev,patch,xz-utils,file,procps,netbase

# The stand-in for gcr.io/distroless/cc-debian12:nonroot: the payload of exactly these packages
# (distroless is assembled from .debs the same way, without dpkg or maintainer scripts), the CA
# bundle, and the nonroot user. No shell, no package manager.
runtime_packages=(base-files netbase tzdata libc6 libgcc-s1 gcc-12-base ca-certificates)

host_cas=/etc/ssl/certs/ca-certificates.crt

# host_extra_cas ROOT: writes the certificates of the host's bundle that ROOT's Mozilla set lacks
# to ROOT/usr/local/share/ca-certificates (where update-ca-certificates looks); prints how many.
host_extra_cas() {
  [ -f "$host_cas" ] || { echo 0; return; }
  python3 - "$host_cas" "$1" <<'PY'
import glob, re, sys
pem = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
host, root = sys.argv[1], sys.argv[2]
known = set()
for path in glob.glob(root + "/usr/share/ca-certificates/mozilla/*.crt"):
    known.update(pem.findall(open(path).read()))
extra = [c for c in pem.findall(open(host).read()) if c not in known]
for i, cert in enumerate(extra):
    with open(f"{root}/usr/local/share/ca-certificates/host-{i}.crt", "w") as f:
        f.write(cert + "\n")
print(len(extra))
PY
}

# commit CONTAINER NAME: the image NAME, and the one it replaces removed (unless still in use).
commit() {
  local old
  old=$(bah images --quiet --no-trunc "$2" 2>/dev/null || true)
  bah unmount "$1" >/dev/null
  bah commit --quiet --rm "$1" "$2" >/dev/null
  [ -z "$old" ] || bah rmi "$old" >/dev/null 2>&1 || true
}

# image_current NAME HASH: the image exists and was made from the recipe hashing to HASH.
image_current() {
  [ "$(bah inspect --type image --format '{{index .ImageAnnotations "eam.recipe"}}' "$1" 2>/dev/null)" = "$2" ]
}

# The host's Rust 1.95 toolchain (the version of rust:1.95-bookworm): rustup's 1.95.0 when there
# is one, else the default rustc, which must then be 1.95. run.sh resolves it before any sudo.
rust_sysroot() {
  local sysroot
  sysroot=${EAM_RUST_SYSROOT:-$(rustc +1.95.0 --print sysroot 2>/dev/null || rustc --print sysroot)}
  case "$("$sysroot/bin/rustc" --version)" in
    "rustc 1.95."*) echo "$sysroot" ;;
    *) echo "$who: $sysroot is not Rust 1.95 (rustup toolchain install 1.95.0)" >&2; return 1 ;;
  esac
}

make_rust_image() {
  local name=$1 sysroot hash ctr mnt
  sysroot=$(rust_sysroot) || return 1
  hash=$(stamp_hash "$rust_packages" "${mirrors[@]}" "$("$sysroot/bin/rustc" --version)" "$("$sysroot/bin/cargo" --version)" \
    "$(declare -f make_rust_image host_extra_cas)" "$host_cas")
  if image_current "$name" "$hash"; then
    echo "$who: $name up to date" >&2
    return
  fi
  echo "$who: making $name (mmdebstrap $suite + the host's $("$sysroot/bin/rustc" --version | cut -d' ' -f1-2))" >&2
  ctr=$(bah from scratch)
  containers+=("$ctr")
  mnt=$(bah mount "$ctr")
  mmdebstrap --quiet --variant=minbase --include="$rust_packages" "$suite" "$mnt" "${mirrors[@]}" >&2
  # The build downloads crates over HTTPS with the build image's trust store. Where the machine
  # reaches the network through a TLS-inspecting proxy, that proxy's CA is in the host's bundle
  # only: the build image adds the host's extra CAs, as a build image made for such a site would.
  local extra
  extra=$(host_extra_cas "$mnt")
  if [ "$extra" -gt 0 ]; then
    echo "$who: the build image also trusts the host's $extra CA(s) outside Debian's set" >&2
    chroot "$mnt" update-ca-certificates >/dev/null 2>&1
  fi
  # The official image's layout: the toolchain under RUSTUP_HOME, the commands under CARGO_HOME/bin.
  # Only what builds for x86_64-unknown-linux-gnu: no docs, sources, rust-analyzer or debuggers.
  local tc="$mnt/usr/local/rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu"
  install -d "$tc/bin" "$tc/lib/rustlib/x86_64-unknown-linux-gnu" "$mnt/usr/local/cargo/bin"
  cp -a "$sysroot/bin/rustc" "$sysroot/bin/cargo" "$sysroot/bin/rustdoc" "$tc/bin/"
  cp -a "$sysroot"/lib/*.so* "$tc/lib/"
  cp -a "$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/lib" "$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/bin" \
    "$tc/lib/rustlib/x86_64-unknown-linux-gnu/"
  local tool
  for tool in rustc cargo rustdoc; do
    ln -s "../../rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu/bin/$tool" "$mnt/usr/local/cargo/bin/$tool"
  done
  chmod -R a+w "$mnt/usr/local/cargo"
  bah config --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION=1.95.0 --cmd bash --annotation "eam.recipe=$hash" \
    --label "eam.standin=rust:1.95-bookworm" "$ctr"
  commit "$ctr" "$name"
}

make_runtime_image() {
  local name=$1 hash ctr mnt debs pkg deb
  hash=$(stamp_hash "${runtime_packages[*]}" "${mirrors[@]}" "$(declare -f make_runtime_image)")
  if image_current "$name" "$hash"; then
    echo "$who: $name up to date" >&2
    return
  fi
  echo "$who: making $name (stand-in for distroless/cc-debian12:nonroot)" >&2
  # mmdebstrap only resolves and downloads here: the .debs of the packages and their dependencies.
  debs=$(mktemp -d)
  scratch+=("$debs")
  local IFS=,
  mmdebstrap --quiet --variant=extract --skip=cleanup/apt/cache --include="${runtime_packages[*]}" \
    "$suite" "$debs/root" "${mirrors[@]}" >&2
  unset IFS
  ctr=$(bah from scratch)
  containers+=("$ctr")
  mnt=$(bah mount "$ctr")
  for pkg in "${runtime_packages[@]}"; do
    deb=$(find "$debs/root/var/cache/apt/archives" -name "${pkg}_*.deb" | head -n 1)
    [ -n "$deb" ] || { echo "$who: no .deb for $pkg" >&2; false; }
    dpkg-deb -x "$deb" "$mnt"
  done
  # What update-ca-certificates would have made, and what distroless ships.
  install -d "$mnt/etc/ssl/certs"
  cat "$mnt"/usr/share/ca-certificates/mozilla/*.crt >"$mnt/etc/ssl/certs/ca-certificates.crt"
  rm -f "$mnt/usr/sbin/update-ca-certificates"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$mnt/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$mnt/etc/group"
  install -d -m 0755 "$mnt/dev" "$mnt/proc" "$mnt/sys" "$mnt/root"
  install -d -m 1777 "$mnt/tmp"
  install -d -m 0700 -o 65532 -g 65532 "$mnt/home/nonroot"
  bah config --user 65532:65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --annotation "eam.recipe=$hash" \
    --label "eam.standin=gcr.io/distroless/cc-debian12:nonroot" "$ctr"
  commit "$ctr" "$name"
}
