#!/usr/bin/env bash
# Draws a desktop-like picture (wallpaper, windows with text, a terminal, a photo) with
# ImageMagick. Usage: scripts/desktop-picture.sh WIDTH HEIGHT OUT.png
set -euo pipefail
w=$1 h=$2 out=$3
im=/usr/bin/convert   # /usr/local/bin/convert may be a stand-in, not ImageMagick
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$im" -size 560x360 -seed 11 plasma:fractal -blur 0x1 "$tmp/photo.png"
lorem="The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs."
"$im" -size "${w}x${h}" gradient:'#1d3557-#457b9d' \
    -fill '#2b2d42' -draw "rectangle 0,$((h - 40)) $w,$h" \
    -fill '#edf2f4' -font DejaVu-Sans -pointsize 14 -annotate +12+$((h - 14)) 'Applications   Files   Terminal' \
    -annotate +$((w - 90))+$((h - 14)) '12:34' \
    -fill '#f8f9fa' -draw 'rectangle 60,60 900,700' \
    -fill '#dee2e6' -draw 'rectangle 60,60 900,92' \
    -fill black -pointsize 15 -annotate +72+82 'Document - Editor' \
    -pointsize 13 \
    -annotate +80+130 "$lorem" -annotate +80+150 "$lorem" -annotate +80+170 "$lorem" \
    -annotate +80+190 "$lorem" -annotate +80+230 "$lorem" -annotate +80+250 "$lorem" \
    -annotate +80+270 "$lorem" -annotate +80+310 "$lorem" -annotate +80+330 "$lorem" \
    -fill '#0b6efd' -draw 'rectangle 80,620 200,660' -fill white -annotate +112+645 'Save' \
    -fill '#111111' -draw 'rectangle 960,120 1860,640' \
    -fill '#333333' -draw 'rectangle 960,120 1860,150' \
    -fill '#dddddd' -annotate +972+140 'user@host: ~' \
    -fill '#33ff66' -font DejaVu-Sans-Mono -pointsize 14 \
    -annotate +972+180 '$ ls -l /var/log' -annotate +972+200 'total 4242 -rw-r----- 1 root adm 120394 syslog' \
    -annotate +972+220 '-rw-r--r-- 1 root root 2384 dpkg.log' -annotate +972+240 '$ cargo build --release' \
    -annotate +972+260 '   Compiling kvmux v0.1.0' -annotate +972+280 '    Finished release [optimized]' \
    "$tmp/photo.png" -geometry +300+720 -composite \
    -fill '#f8f9fa' -draw "rectangle 960,700 $((w - 60)),$((h - 80))" \
    -fill black -font DejaVu-Sans -pointsize 12 \
    -annotate +980+730 'Name                         Size      Modified' \
    -annotate +980+750 'report.pdf                   1.2 MB    yesterday' \
    -annotate +980+770 'holiday.jpg                  3.4 MB    last week' \
    "$out"
