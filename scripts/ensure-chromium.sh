#!/usr/bin/env bash
# Makes sure Debian's chromium is installed for the dashboard's browser test, which
# drives it with Playwright at /usr/bin/chromium (Playwright's own browser download is
# never used). Installs it with apt-get when it is missing and we are root; otherwise
# says what to do and exits 0, so that the test itself reports the missing browser.
set -uo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
  echo "chromium is installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "warning: $CHROMIUM is missing and this is not root; install it with" \
       "'sudo apt-get install -y chromium' (the dashboard browser test needs it)" >&2
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: $CHROMIUM is missing and apt-get is not available; install a chromium" \
       "build at $CHROMIUM (the dashboard browser test needs it)" >&2
  exit 0
fi

echo "installing Debian's chromium with apt-get (for the dashboard browser test)"
export DEBIAN_FRONTEND=noninteractive
if apt-get update && apt-get install -y chromium; then
  echo "chromium installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
else
  echo "warning: could not install chromium with apt-get; the dashboard browser test" \
       "will fail until $CHROMIUM exists" >&2
fi
exit 0
