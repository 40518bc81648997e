#!/usr/bin/env bash
# Debian packages some tests need: Chromium (the widget's browser test; never a
# downloaded browser) and redis-server (shared-store tests). Installs what is
# missing when it can (root or sudo); otherwise says what to install.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo"
else
    echo "missing Debian packages: ${need[*]} (apt-get install ${need[*]}); their tests will be skipped" >&2
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || { echo "no apt-get: install ${need[*]} yourself" >&2; exit 0; }
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
