#!/usr/bin/env bash
# Builds Verdict's container images as OCI archives, with buildah, from the built binaries and
# the Debian packages their shared libraries come from:
#   bash scripts/images.sh [--debug] [--out DIR] [--tag TAG]
# - verdict-agent: verdict-probe and verdict-shipper (the node DaemonSet; runs as root with the
#   capabilities the chart lists);
# - verdict-collector: verdict-collector, user 65532 (non-root). The verdict CLI is not in it: it
#   talks to the collector over HTTP from anywhere, and would double the image.
# Each image is `scratch` plus the stripped binaries, the exact shared libraries `ldd` reports
# (copied from their Debian packages' installed files, each package named in the image's
# labels), CA certificates, and /etc/passwd for the user. No shell, no package manager.
# Release binaries by default (cargo build --release); --debug packs target/debug's (tests).
# Writes DIR/verdict-agent.oci.tar and DIR/verdict-collector.oci.tar (default DIR: target/images)
# and prints each image's size.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
out=""
tag="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug ;;
    --out) out="$2"; shift ;;
    --tag) tag="$2"; shift ;;
    *) echo "usage: $0 [--debug] [--out DIR] [--tag TAG]" >&2; exit 2 ;;
  esac
  shift
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
out="${out:-$CARGO_TARGET_DIR/images}"
mkdir -p "$out"

source scripts/deps.sh
install_debian_packages buildah binutils ca-certificates

bins=(verdict-probe verdict-shipper verdict-collector)
if [ "$profile" = release ]; then
  cargo build --release --locked -p verdict-probe -p verdict-shipper -p verdict-collector
fi
for b in "${bins[@]}"; do
  [ -x "$CARGO_TARGET_DIR/$profile/$b" ] || { echo "missing $CARGO_TARGET_DIR/$profile/$b: build it first" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The Debian package that installed FILE (dpkg records merged-/usr files under /lib too).
package_of() {
  local f="$1" p
  for p in "$f" "${f#/usr}"; do
    if dpkg -S "$p" >/dev/null 2>&1; then
      dpkg -S "$p" | head -1 | cut -d: -f1
      return
    fi
  done
  echo "no Debian package holds $f" >&2
  return 1
}

# A root filesystem holding BINARIES (stripped) and what they need at run time.
make_rootfs() {
  local root="$1" user="$2"; shift 2
  mkdir -p "$root/usr/bin" "$root/etc/ssl/certs" "$root/tmp"
  chmod 1777 "$root/tmp"
  # Debian's merged /usr: /lib and /lib64 are links into /usr, as on the build host.
  local d
  for d in lib lib64; do
    if [ -L "/$d" ]; then
      mkdir -p "$root/usr/$d"
      ln -s "$(readlink "/$d")" "$root/$d"
    fi
  done
  local b lib real packages=()
  for b in "$@"; do
    strip --strip-debug -o "$root/usr/bin/$b" "$CARGO_TARGET_DIR/$profile/$b"
    # Every shared library the binary loads (the dynamic loader included): the file itself, and
    # a link at the path ldd prints (its soname), where the loader looks for it.
    for lib in $(ldd "$CARGO_TARGET_DIR/$profile/$b" | grep -o '/[^ ]*'); do
      real="$(readlink -f "$lib")"
      mkdir -p "$root$(dirname "$real")" "$root$(dirname "$lib")"
      cp -n "$real" "$root$real"
      [ -e "$root$lib" ] || ln -s "$real" "$root$lib"
      packages+=("$(package_of "$real")")
    done
  done
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nverdict:x:65532:65532:verdict:/var/lib/verdict:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nverdict:x:65532:\n' >"$root/etc/group"
  if [ "$user" != 0 ]; then
    mkdir -p "$root/var/lib/verdict"
    chown 65532:65532 "$root/var/lib/verdict"
  fi
  printf '%s\n' "${packages[@]}" | sort -u | grep . | while read -r p; do
    printf '%s=%s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p")"
  done | paste -sd, - >"$root.packages"
}

build_image() {
  local name="$1" user="$2" entrypoint="$3"; shift 3
  local root="$work/$name"
  make_rootfs "$root" "$user" "$@"
  local ctr
  ctr="$(buildah --storage-driver vfs from scratch)"
  buildah --storage-driver vfs copy "$ctr" "$root/" / >/dev/null
  buildah --storage-driver vfs config \
    --entrypoint "[\"$entrypoint\"]" --cmd '["--help"]' --user "$user:$user" --workingdir / \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --label org.opencontainers.image.title="$name" \
    --label org.opencontainers.image.version="$tag" \
    --label org.opencontainers.image.source="https://example.invalid/verdict" \
    --label dev.verdict.debian-packages="$(cat "$root.packages")" \
    "$ctr"
  rm -f "$out/$name.oci.tar"
  buildah --storage-driver vfs commit --quiet --format oci "$ctr" "oci-archive:$out/$name.oci.tar:$name:$tag" >/dev/null
  buildah --storage-driver vfs rm "$ctr" >/dev/null
  printf '%-20s %6s MiB  (%s)\n' "$name" "$(( $(stat -c %s "$out/$name.oci.tar") / 1048576 ))" "$out/$name.oci.tar"
}

build_image verdict-agent 0 /usr/bin/verdict-probe verdict-probe verdict-shipper
build_image verdict-collector 65532 /usr/bin/verdict-collector verdict-collector
