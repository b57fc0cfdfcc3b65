#!/usr/bin/env bash
# Records the streams the decoder benchmarks replay: Xvnc at 1920x1080 showing a
# desktop-like picture, one full frame per encoding, into rfb/benches/data/.
# Run again after changing the picture or the encodings; the results are committed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
cargo build --release -p kvmux
work="$(mktemp -d)"
trap 'kill "${xvnc_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
n=88 port=$((5900 + 88))
Xvnc ":$n" -geometry 1920x1080 -depth 24 -rfbport "$port" -localhost -SecurityTypes None -AlwaysShared \
    >"$work/xvnc.log" 2>&1 &
xvnc_pid=$!
for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
"$root/scripts/desktop-picture.sh" 1920 1080 "$work/desktop.png"
# `display -window root` exits 1 even when it worked.
DISPLAY=":$n" /usr/bin/display -window root "$work/desktop.png" || true
sleep 0.5
data="$root/rfb/benches/data"
mkdir -p "$data"
snap() { local name=$1; shift; "$root/target/release/kvmux" snapshot "127.0.0.1::$port" "$work/$name.png" --record "$data/$name.rfbrec" "$@"; }
snap zrle --encoding zrle
snap tight --encoding tight
snap tight-jpeg-q8 --encoding tight --quality 8

ls -l "$data"
