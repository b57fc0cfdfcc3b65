#!/bin/sh
# Compares viewers on a source that changes every pixel every frame: kvmux-viewer,
# TigerVNC's vncviewer and gtk-vnc's gvncviewer, one after another, each on its own Xvfb,
# each against a fresh `kvmux testsrc --pattern noise` of the same size.
#
#   scripts/bench-viewer.sh [SECONDS] [WIDTHxHEIGHT]      default: 10 s, 1920x1080
#
# How frames are counted, the same way for every viewer: the source logs each
# FramebufferUpdate it writes ("Update encoded", testsrc at KVMUX_LOG=debug). A viewer
# gets a new update only after asking for one (FramebufferUpdateRequest) or, with
# continuous updates (TigerVNC), as fast as it reads them, so updates written per second
# is the rate at which each viewer takes whole new frames. kvmux-viewer also reports the
# frames it actually painted (KVMUX_VIEWER_FPS=1), shown as "painted fps".
# CPU is user + system time from /proc/PID/stat over the same window, for the viewer and
# for its X server (drawing costs land on either side), divided by the frames counted.
# bytes/upd is the mean size of the updates the source wrote in the window: viewers
# compared on the same settings must show the same, or they were not sent the same thing.
# Each viewer is run with the same encoding settings as the others in its group:
# "lossless" (Tight without JPEG, full colour, compression level 1 as kvmux-viewer asks) and "jpeg8" (Tight with JPEG at quality
# level 8, what TigerVNC's automatic selection picks on a fast link); then vncviewer and
# gvncviewer with their defaults (kvmux-viewer's defaults are the "lossless" row).
# Not part of the test run.
set -eu

cd "$(dirname "$0")/.."
seconds=${1:-10}
size=${2:-1920x1080}
width=${size%x*}
height=${size#*x}
warmup=4

cargo build --release -q -p kvmux -p kvmux-viewer
kvmux=target/release/kvmux
viewer=target/release/kvmux-viewer
for tool in Xvfb vncviewer gvncviewer; do
    command -v "$tool" >/dev/null || { echo "bench-viewer.sh: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=""
cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

ticks=$(getconf CLK_TCK)
# user + system ticks of process $1
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_display() {
    n=120
    while [ -e "/tmp/.X$n-lock" ] || [ -e "/tmp/.X11-unix/X$n" ]; do n=$((n + 1)); done
    echo "$n"
}
updates() { grep -c "Update encoded" "$1" 2>/dev/null || true; }
# mean bytes of the updates logged after line $2 of source log $1
update_bytes() {
    grep "Update encoded" "$1" | tail -n +"$(($2 + 1))" |
        sed -n 's/.*bytes=\([0-9]*\).*/\1/p' | awk '{ s += $1; n++ } END { if (n) printf "%.0f", s / n; else print "-" }'
}

printf '%-24s %8s %12s %14s %14s %12s %12s\n' viewer fps "painted fps" "viewer ms/fr" "Xvfb ms/fr" "total ms/fr" "bytes/upd"
for run in "kvmux-viewer lossless" "vncviewer lossless" "kvmux-viewer jpeg8" "vncviewer jpeg8" "vncviewer default" "gvncviewer default"; do
    set -- $run
    name=$1
    mode=$2
    port=$(free_port)
    # gvncviewer only takes host:display, i.e. a port of 5900 and above.
    while [ "$port" -lt 5901 ]; do port=$(free_port); done
    KVMUX_LOG=debug "$kvmux" testsrc --listen "127.0.0.1:$port" --pattern noise \
        --size "$size" --fps 60 --name bench >"$work/$name-src.log" 2>&1 &
    src=$!
    pids="$pids $src"
    display=$(free_display)
    Xvfb ":$display" -screen 0 "$((width + 200))x$((height + 200))x24" -nolisten tcp >"$work/$name-x.log" 2>&1 &
    xvfb=$!
    pids="$pids $xvfb"
    while [ ! -e "/tmp/.X11-unix/X$display" ]; do sleep 0.1; done
    case $name in
        kvmux-viewer)
            DISPLAY=":$display" GDK_BACKEND=x11 GSK_RENDERER="${GSK_RENDERER:-cairo}" NO_AT_BRIDGE=1 KVMUX_VIEWER_FPS=1 \
                "$viewer" --scaling none $([ "$mode" = jpeg8 ] && echo --quality 8) "127.0.0.1::$port" >"$work/$name.log" 2>&1 & ;;
        vncviewer)
            case $mode in
                jpeg8) opts="-AutoSelect=0 -PreferredEncoding=Tight -FullColor -CompressLevel=1 -QualityLevel=8" ;;
                lossless) opts="-AutoSelect=0 -PreferredEncoding=Tight -FullColor -CompressLevel=1 -NoJPEG" ;;
                *) opts="" ;;
            esac
            DISPLAY=":$display" vncviewer -SecurityTypes=None $opts \
                "127.0.0.1::$port" >"$work/$name.log" 2>&1 & ;;
        gvncviewer)
            DISPLAY=":$display" gvncviewer "127.0.0.1:$((port - 5900))" >"$work/$name.log" 2>&1 & ;;
    esac
    client=$!
    pids="$pids $client"
    sleep "$warmup"
    u0=$(updates "$work/$name-src.log"); c0=$(cpu_ticks "$client"); x0=$(cpu_ticks "$xvfb")
    p0=$(grep -c "kvmux-viewer frames" "$work/$name.log" || true)
    sleep "$seconds"
    u1=$(updates "$work/$name-src.log"); c1=$(cpu_ticks "$client"); x1=$(cpu_ticks "$xvfb")
    painted="-"
    if [ "$name" = kvmux-viewer ]; then
        # Mean of the per-second reports inside the window.
        painted=$(grep "kvmux-viewer frames" "$work/$name.log" | tail -n +"$((p0 + 1))" |
            sed -n 's/.*(\([0-9.]*\) fps).*/\1/p' | awk '{ s += $1; n++ } END { if (n) printf "%.1f", s / n; else print "-" }')
    fi
    bytes=$(update_bytes "$work/$name-src.log" "$u0")
    awk -v u="$((u1 - u0))" -v bytes="$bytes" -v c="$((c1 - c0))" -v x="$((x1 - x0))" -v t="$ticks" -v s="$seconds" \
        -v name="$name ($mode)" -v painted="$painted" 'BEGIN {
        fps = u / s
        if (u > 0) { vm = c / t * 1000 / u; xm = x / t * 1000 / u } else { vm = 0; xm = 0 }
        printf "%-24s %8.1f %12s %14.2f %14.2f %12.2f %12s\n", name, fps, painted, vm, xm, vm + xm, bytes
    }'
    kill "$client" "$xvfb" "$src" 2>/dev/null || true
    wait "$client" "$xvfb" "$src" 2>/dev/null || true
    pids=""
done
