#!/bin/sh
# Runs every test of the workspace, including the ones against real VNC peers.
#   scripts/test.sh [cargo test arguments…]     e.g. scripts/test.sh --release
# The integration tests run the kvmux and kvmux-viewer binaries, which `cargo test` does
# not build for them: they are built here first, with the same profile.
set -eu

cd "$(dirname "$0")/.."

scripts/setup.sh

profile=""
for arg in "$@"; do
    [ "$arg" = --release ] && profile=--release
done

cargo build -p kvmux -p kvmux-viewer $profile
# --no-fail-fast: every suite runs even when one fails; the exit status still says so.
cargo test --workspace --no-fail-fast "$@"
