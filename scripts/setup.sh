#!/bin/sh
# Prepares a Debian 12 machine (with Rust already installed) for the tests against real
# VNC peers. Idempotent: when everything is present it changes nothing and takes a second.
#
# - Debian packages: the peers (TigerVNC's Xvnc, x11vnc on Xvfb; the viewers TigerVNC
#   vncviewer and gtk-vnc's gvncviewer, run against kvmux's own server) and the tools the
#   tests use to paint and read back the X screen (ImageMagick, xwd) and to find and move
#   windows on it (xwininfo, xdotool), to set and read its clipboard (xclip) and to set
#   its root cursor (xsetroot), plus
#   openssl for certificates, and GTK 4 and
#   libadwaita (headers and pkg-config) to build kvmux-viewer, and cmake, nasm and a C
#   compiler, which build libjpeg-turbo (rfb's JPEG codec) from source.
# - A PAM service `kvmux-tests` that accepts one fixed test account, so that Xvnc's
#   X509Plain (which checks user names and passwords through PAM) can be tested without
#   knowing any real password on the machine. See `PLAIN_*` in tests/src/servers.rs.
# - A Python venv at .venv/ with vncdotool, an independent VNC client.
# - Chromium (Debian's) and, in tests/novnc/node_modules, the npm packages pinned in
#   tests/novnc/package-lock.json: noVNC 1.7 and playwright-core, which drives Chromium.
#   Node.js and npm are installed from Debian only when the machine has none.
set -eu

cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1; then
    as_root() { sudo "$@"; }
else
    echo "setup.sh: must run as root (or with sudo available)" >&2
    exit 1
fi

packages="tigervnc-standalone-server tigervnc-tools tigervnc-viewer gvncviewer x11vnc xvfb
    imagemagick x11-apps x11-utils xdotool openbox xinput fonts-dejavu-core openssl xauth python3-venv ca-certificates
    chromium libgtk-4-dev libadwaita-1-dev pkg-config cmake nasm gcc make xclip x11-xserver-utils"
# Machines that come with Node.js have it from elsewhere than Debian (with its own npm):
# Debian's packages only where there is none.
command -v node >/dev/null 2>&1 || packages="$packages nodejs"
command -v npm >/dev/null 2>&1 || packages="$packages npm"

missing=""
for package in $packages; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
    [ "$status" = installed ] || missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "setup.sh: installing$missing"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # shellcheck disable=SC2086 # one word per package
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

# Writes stdin to file $1 only when its content differs; $2 is the mode.
install_file() {
    content=$(cat)
    if [ ! -f "$1" ] || [ "$(cat "$1")" != "$content" ]; then
        echo "setup.sh: writing $1"
        as_root mkdir -p "$(dirname "$1")"
        printf '%s\n' "$content" | as_root tee "$1" >/dev/null
    fi
    as_root chmod "$2" "$1"
}

# pam_exec hands the password over on stdin (NUL-terminated, no newline); `read` stops at the
# end of input and still fills the variable.
install_file /usr/local/lib/kvmux-tests/pam-plain-check 0755 <<'EOF'
#!/bin/sh
# Accepts only the kvmux test account; used by the PAM service kvmux-tests alone.
IFS= read -r password || true
[ "$PAM_USER" = kvmux-plain ] && [ "$password" = kvmux-plain-password ]
EOF

install_file /etc/pam.d/kvmux-tests 0644 <<'EOF'
# kvmux integration tests: Xvnc -PAMService=kvmux-tests checks X509Plain logins here.
# Only the fixed test account is accepted; no system account can log in through it.
auth     required pam_exec.so expose_authtok quiet /usr/local/lib/kvmux-tests/pam-plain-check
account  required pam_permit.so
session  required pam_permit.so
password required pam_deny.so
EOF

vncdotool_version=1.4.2
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('vncdotool') != '$vncdotool_version')" 2>/dev/null; then
    echo "setup.sh: creating .venv with vncdotool $vncdotool_version"
    /usr/bin/python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "vncdotool==$vncdotool_version"
fi

# npm ci installs exactly the lock file; the copy it leaves in node_modules says it is done.
novnc=tests/novnc
if ! cmp -s "$novnc/package-lock.json" "$novnc/node_modules/.kvmux-installed-lock.json"; then
    echo "setup.sh: installing the npm packages of $novnc"
    (cd "$novnc" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$novnc/package-lock.json" "$novnc/node_modules/.kvmux-installed-lock.json"
fi
