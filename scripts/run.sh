#!/usr/bin/env bash
# The main job, for now: start a real VNC server (TigerVNC's Xvnc) showing a test
# picture, take a snapshot of it with `kvmux snapshot`, and say where it went.
# Usage: scripts/run.sh [OUT.png]   (default: snapshot.png)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "${1:-snapshot.png}")"
"$root/scripts/setup.sh"
cd "$root"
cargo build --release -p kvmux
work="$(mktemp -d)"
display=""
cleanup() {
    [ -n "${xvnc_pid:-}" ] && kill "$xvnc_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# A free display and port.
for n in $(seq 60 99); do
    if [ ! -e "/tmp/.X$n-lock" ] && [ ! -e "/tmp/.X11-unix/X$n" ] && ! (echo > "/dev/tcp/127.0.0.1/$((5900 + n))") 2>/dev/null; then
        display=$n
        break
    fi
done
[ -n "$display" ] || { echo "no free X display between :60 and :99" >&2; exit 1; }
port=$((5900 + display))
Xvnc ":$display" -geometry 1280x800 -depth 24 -rfbport "$port" -localhost -SecurityTypes None \
    -AlwaysShared -desktop "kvmux demo" >"$work/xvnc.log" 2>&1 &
xvnc_pid=$!
for _ in $(seq 1 100); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
/usr/bin/convert -size 1280x800 -seed 7 plasma:fractal \
    -fill '#202830' -draw 'rectangle 0,0 1280,40' \
    -fill white -font DejaVu-Sans -pointsize 22 -annotate +16+28 'kvmux snapshot demo' \
    -fill '#f0f0f0' -draw 'rectangle 80,120 700,560' \
    -fill black -pointsize 14 -annotate +100+160 'A real VNC server (Xvnc) shows this picture;' \
    -annotate +100+184 'kvmux snapshot read it over RFB and wrote it to a PNG.' \
    "$work/picture.png"
# `display -window root` exits 1 even when it worked.
DISPLAY=":$display" /usr/bin/display -window root "$work/picture.png" || true
"$root/target/release/kvmux" snapshot "127.0.0.1::$port" "$out"
echo "Snapshot of Xvnc :$display written to $out"
