#!/usr/bin/env bash
# Create .venv at the repository root when missing, and install trainmap into it
# (maturin builds the Rust metrics engine into the package). Also makes sure
# Graphviz's `dot`, which draws the training maps, is on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
echo "== installing trainmap (builds rust_metrics in release mode; the first build takes a few minutes)"
.venv/bin/python -m pip install --progress-bar off --editable '.[test]'

if ! command -v dot >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Graphviz from Debian packages"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
    else
        echo "warning: Graphviz 'dot' is not on PATH; install it (apt install graphviz," \
             "brew install graphviz or conda install graphviz) to draw training maps" >&2
    fi
fi
