#!/usr/bin/env bash
# What the proxy (`kvmux serve`) adds, measured side by side in one run by the hidden
# `kvmux bench-proxy`, which runs its own RFB sources and viewers and starts the proxy
# with a config pointing at them: key and frame latency directly and through the
# proxy, hotkey switch time, and the proxy's CPU per transcoded 1920x1080 frame
# (ZRLE, Tight, and a viewer the upstream's rectangles would suit as they are).
# Not part of the test run. Usage: scripts/bench-proxy.sh [extra bench-proxy args]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release -p kvmux
kvmux="$root/target/release/kvmux"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/scripts/desktop-picture.sh" 1920 1080 "$work/desktop.png"
"$kvmux" bench-proxy --mode latency --work "$work" "$@"
"$kvmux" bench-proxy --mode cpu --image "$work/desktop.png" --work "$work" "$@"
