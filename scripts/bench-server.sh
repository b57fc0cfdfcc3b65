#!/usr/bin/env bash
# Compares kvmux's RFB server (`kvmux testsrc`) with TigerVNC's Xvnc serving the same
# 1920x1080 desktop-like picture: full-frame updates per second, bytes per update and
# server CPU per update for each encoding, pulled by the same client
# (`kvmux bench-pull`). Then the clock pattern: incremental updates vs full frames.
# FRAMES defaults to 200: far fewer leave the rates to warm-up (thread start, first
# allocations) more than to the encoders.
# Not part of the test run; prints a table. Usage: scripts/bench-server.sh [FRAMES]
#
# The client only frames the updates (`bench-pull --no-decode`: each rectangle is
# measured, its pixels are skipped), so that a client decoding on the same cores does
# not limit either server; set DECODE=1 to decode every frame instead. Its CPU time per
# update is shown too (same client, same work per byte for both servers). CLOCK=0
# leaves out the clock pattern.
#
# Every full (non-incremental) request really encodes the whole frame: neither server
# may answer one from a cache of an earlier encoding of the unchanged framebuffer, or
# this would measure the cache rather than the encoder. kvmux testsrc keeps no such
# cache; Xvnc keeps none for full requests either.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
frames=${1:-200}
cd "$root"
cargo build --release -p kvmux
kvmux="$root/target/release/kvmux"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; return 1; }

"$root/scripts/desktop-picture.sh" 1920 1080 "$work/desktop.png"

# Xvnc on a free display number.
n=60
while [ -e "/tmp/.X11-unix/X$n" ] || [ -e "/tmp/.X$n-lock" ]; do n=$((n + 1)); done
xport=$(free_port)
Xvnc ":$n" -geometry 1920x1080 -depth 24 -rfbport "$xport" -localhost -SecurityTypes None -AlwaysShared \
    >"$work/xvnc.log" 2>&1 &
xvnc_pid=$!; pids+=("$xvnc_pid")
wait_port "$xport"
# `display -window root` exits 1 even when it worked.
DISPLAY=":$n" /usr/bin/display -window root "$work/desktop.png" || true
sleep 0.5

kport=$(free_port)
"$kvmux" testsrc --listen "127.0.0.1:$kport" --pattern "image:$work/desktop.png" 2>"$work/testsrc.log" &
kvmux_pid=$!; pids+=("$kvmux_pid")
wait_port "$kport"

decode_flag=--no-decode
if [ "${DECODE:-0}" = 1 ]; then decode_flag=; fi

# pull PORT PID ARGS...: prints "updates/s bytes/update server-cpu-ms/update bytes/s client-cpu-ms/update"
pull() {
    local port=$1 pid=$2; shift 2
    # shellcheck disable=SC2086
    "$kvmux" bench-pull "127.0.0.1::$port" --server-pid "$pid" $decode_flag "$@" |
        sed -E 's/.*updates_per_s=([^ ]+) bytes_per_update=([^ ]+) bytes_per_s=([^ ]+) cpu_ms_per_update=([^ ]+) client_cpu_ms_per_update=([^ ]+).*/\1 \2 \4 \3 \5/'
}
ratio() { python3 -c "import sys; a,b=sys.argv[1:]; print('%.2f' % (float(a)/float(b)) if b not in ('-','0','0.0') and a != '-' else '-')" "$1" "$2"; }

echo
echo "Full 1920x1080 frames ($frames per encoding), kvmux testsrc vs Xvnc $(Xvnc -version 2>&1 | grep -o 'TigerVNC [0-9.]*' | head -1)," \
    "client ${decode_flag:+not }decoding"
printf '%-15s | %7s %7s %5s | %9s %9s %5s | %7s %7s %5s | %9s %9s\n' \
    encoding 'ours/s' 'Xvnc/s' ratio 'ours B' 'Xvnc B' ratio 'ours ms' 'Xvnc ms' ratio 'client ms' '(Xvnc)'
printf '%s\n' "----------------+-----------------------+-----------------------------+-----------------------+--------------------"
for spec in "ZRLE:--encoding zrle" "Tight lossless:--encoding tight" "Tight JPEG q8:--encoding tight --quality 8" \
    "Hextile:--encoding hextile" "Raw:--encoding raw"; do
    name=${spec%%:*}; args=${spec#*:}
    # shellcheck disable=SC2086
    read -r our_rate our_bytes our_cpu _ our_client < <(pull "$kport" "$kvmux_pid" $args --frames "$frames")
    # shellcheck disable=SC2086
    read -r x_rate x_bytes x_cpu _ x_client < <(pull "$xport" "$xvnc_pid" $args --frames "$frames")
    printf '%-15s | %7s %7s %5s | %9s %9s %5s | %7s %7s %5s | %9s %9s\n' "$name" \
        "$our_rate" "$x_rate" "$(ratio "$our_rate" "$x_rate")" \
        "$our_bytes" "$x_bytes" "$(ratio "$our_bytes" "$x_bytes")" \
        "$our_cpu" "$x_cpu" "$(ratio "$our_cpu" "$x_cpu")" "$our_client" "$x_client"
done

# The clock pattern: a box moving every frame, a clock redrawn every second.
if [ "${CLOCK:-1}" = 0 ]; then exit 0; fi
cport=$(free_port)
"$kvmux" testsrc --listen "127.0.0.1:$cport" --pattern clock --size 1920x1080 --fps 30 2>"$work/clock.log" &
clock_pid=$!; pids+=("$clock_pid")
wait_port "$cport"
echo
echo "Clock pattern 1920x1080 at 30 fps, 5 s each, kvmux testsrc"
printf '%-18s | %-12s | %9s %12s %12s %9s\n' encoding client 'upd/s' 'B/upd' 'B/s' 'cpu ms'
printf '%s\n' "-------------------+--------------+-----------------------------------------------"
for spec in "ZRLE:--encoding zrle" "Tight lossless:--encoding tight" "Tight JPEG q8:--encoding tight --quality 8"; do
    name=${spec%%:*}; args=${spec#*:}
    for mode in incremental full; do
        # shellcheck disable=SC2086
        read -r rate bytes cpu bps _ < <(pull "$cport" "$clock_pid" $args --mode "$mode" --seconds 5)
        printf '%-18s | %-12s | %9s %12s %12s %9s\n' "$name" "$mode" "$rate" "$bytes" "$bps" "$cpu"
    done
done
