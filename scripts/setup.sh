#!/usr/bin/env bash
# Install everything this project needs on a fresh Debian 12 machine, idempotently.
#   scripts/setup.sh          install, then run the main job: conformance run suites/
#   scripts/setup.sh --no-run install only (what scripts/test uses)
# Debian packages come from scripts/apt/*.txt (one list per area); Python packages into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

run_main=1
[ "${1:-}" = "--no-run" ] && run_main=0

packages=$(grep -hv '^\s*#' scripts/apt/*.txt | awk 'NF {print $1}' | sort -u)
missing=$(dpkg-query -W -f='${Package} ${Status}\n' $packages 2>/dev/null | awk '$4 != "installed" {print $1}' || true)
# dpkg-query prints nothing for packages it never heard of: count those as missing too.
for p in $packages; do dpkg-query -W "$p" >/dev/null 2>&1 || missing="$missing $p"; done
missing=$(echo $missing | tr ' ' '\n' | sort -u | tr '\n' ' ')
if [ -n "${missing// /}" ]; then
    echo "setup: installing Debian packages: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/pip install -q -U pip
    .venv/bin/pip install -q -e '.[dev]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi

for hook in scripts/setup.d/*.sh; do
    [ -e "$hook" ] && bash "$hook"
done

if [ "$run_main" = 1 ]; then
    unset PYTHONDONTWRITEBYTECODE  # refrt starts a Python process per call: let them share cached bytecode
    exec .venv/bin/conformance run suites/
fi
