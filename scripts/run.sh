#!/usr/bin/env bash
# The main job: `kvmux demo`, the proxy with three built-in test machines behind one
# VNC endpoint (127.0.0.1:5900) and a WebSocket endpoint for noVNC (127.0.0.1:5800).
# Connect with any VNC client and switch machines with the hotkeys it prints.
# Usage: scripts/run.sh [--listen ADDR] [--websocket ADDR]   (stop with Ctrl+C)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
cargo build --release -p kvmux
exec "$root/target/release/kvmux" demo "$@"
