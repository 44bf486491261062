#!/usr/bin/env bash
# Best effort: install headless Chromium (Debian package `chromium`) for the browser test of the
# tracking report (tests/test_tracking_report.py). Needs root and apt-get; otherwise it says so and
# the test is skipped with that reason. Never fails the setup.
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: not root or no apt-get: Chromium not installed, the report's browser test will be skipped"
  exit 0
fi
echo "install_chromium: apt-get install chromium (for the report's browser test)"
if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
       || { apt-get update -qq >/dev/null 2>&1 \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }; }; then
  echo "install_chromium: apt-get could not install chromium; the report's browser test will be skipped"
fi
exit 0
