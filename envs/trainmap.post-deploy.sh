#!/usr/bin/env bash
# Snakemake runs this once in the freshly created environment (from the working directory,
# which must be the repository root): install trainmap itself, building the Rust engine.
set -euo pipefail
python -m pip install --no-deps --no-build-isolation --editable .
