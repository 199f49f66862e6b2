#!/usr/bin/env bash
# Verdict's first command (the README's): installs what the build needs (idempotent), builds the
# `verdict` CLI and runs `verdict demo` — collector, node, shipper and live traffic on this
# machine, no external service. Arguments go to `verdict demo` (e.g. --datapath userspace).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_debian_packages "${build_packages[@]}"
mount_bpffs
cargo build -q -p verdict-cli
exec "${CARGO_TARGET_DIR:-target}/debug/verdict" demo "$@"
