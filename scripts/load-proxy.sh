#!/usr/bin/env bash
# Load check of the proxy (`kvmux serve`), by the hidden `kvmux bench-proxy --mode load`:
# 50 viewers across 3 sources for 60 s (errors, the proxy's RSS every second), the
# memory of 50 idle viewers against 1.2 x the sources' framebuffers + 1 MiB each, and
# the proxy's CPU with 50 viewers of one whole-screen-changing source against 1.
# Takes about two minutes; not part of the test run.
# Usage: scripts/load-proxy.sh [extra bench-proxy args, e.g. --clients 20 --seconds 30]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release -p kvmux
kvmux="$root/target/release/kvmux"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/scripts/desktop-picture.sh" 1920 1080 "$work/desktop.png"
"$kvmux" bench-proxy --mode load --image "$work/desktop.png" --work "$work" "$@"
