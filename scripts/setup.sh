#!/usr/bin/env bash
# Create .venv at the repository root when missing and install the locked environment
# into it: every dependency at the exact version in requirements.lock, then trainmap
# itself (editable; maturin builds the Rust metrics engine into the package). Also makes
# sure Graphviz's `dot`, which draws the training maps, is on PATH, and a headless
# Chromium with its chromedriver, which the interactive map's browser tests drive.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
UV_VERSION=0.13.8   # the installer; the same version writes requirements.lock (make lock)
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
echo "== installing the locked dependencies (requirements.lock)"
# --compile-bytecode: write every dependency's .pyc now. Without it each process compiles
# what it imports (torch alone: 9 s instead of 3.5 s on 2 cores), and where
# PYTHONDONTWRITEBYTECODE is set it does so every time: each workflow job and each test
# that starts one pays it again.
.venv/bin/uv pip install --python .venv/bin/python --compile-bytecode -r requirements.lock
echo "== installing trainmap (builds rust_metrics in release mode; the first build takes a few minutes)"
.venv/bin/uv pip install --python .venv/bin/python --no-deps --editable .
# trainmap's own .pyc too (an editable install is not compiled; a stale one is ignored).
.venv/bin/python -m compileall -q python/trainmap >/dev/null

if ! command -v dot >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Graphviz from Debian packages"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
    else
        echo "warning: Graphviz 'dot' is not on PATH; install it (apt install graphviz," \
             "brew install graphviz or conda install graphviz) to draw training maps" >&2
    fi
fi

if ! { command -v chromium >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1; } \
        || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Chromium and chromedriver from Debian packages (browser tests of the interactive map)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "warning: no Chromium/chromedriver on PATH; the interactive map's browser tests will be skipped" \
             "(apt install chromium chromium-driver, or set TRAINMAP_CHROME and TRAINMAP_CHROMEDRIVER)" >&2
    fi
fi
