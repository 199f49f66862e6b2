# Sourced by scripts/demo.sh and scripts/test.sh: the Debian packages Verdict's build needs, and
# an idempotent installer for them.
#
# clang, llvm, libbpf-dev: the eBPF programs (ebpf-probe/build.rs); cmake, libcurl4-openssl-dev:
# rdkafka's bundled librdkafka (collector sinks); pkg-config: native libraries; iproute2: network
# namespaces (the demo's eBPF mode, the kernel tests).
build_packages=(pkg-config clang llvm libbpf-dev cmake libcurl4-openssl-dev iproute2)

# Installs the given Debian packages that are missing (apt-get, as root).
install_debian_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root or install them)" >&2
    return 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# eBPF maps are pinned under /sys/fs/bpf.
mount_bpffs() {
  if [ "$(id -u)" -eq 0 ] && ! mountpoint -q /sys/fs/bpf; then
    mount -t bpf bpf /sys/fs/bpf || echo "warning: could not mount bpffs at /sys/fs/bpf" >&2
  fi
}
