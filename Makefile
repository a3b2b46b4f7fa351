# Front door. `make run` sets up .venv and runs the quick workflow; `make test` sets up
# .venv and runs every test (cargo and pytest). Both are safe to repeat.
VENV      := .venv
STAMP     := $(VENV)/.trainmap-installed
RUST_SRC  := $(shell find rust_metrics/src -name '*.rs') rust_metrics/Cargo.toml rust_metrics/Cargo.lock
CARGO_TEST := cargo test --release --manifest-path rust_metrics/Cargo.toml
UV_VERSION := 0.13.8
# Extra Snakemake options for `make run`, e.g. RUN_FLAGS=--dry-run. Targets go before
# --configfile, which takes several values.
RUN_FLAGS :=

.PHONY: setup lock test test-fast test-rust test-python test-cluster run bench clean

$(STAMP): pyproject.toml requirements.lock scripts/setup.sh $(RUST_SRC)
	scripts/setup.sh
	touch $@

setup: $(STAMP)

# Re-resolve requirements.lock from pyproject.toml's ranges (newest versions that fit,
# for every platform), then `make setup` installs them. Commit the new lock with the
# test results it passed.
lock:
	python3 -m pip install --quiet "uv==$(UV_VERSION)"
	python3 -m uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
		--upgrade --output-file requirements.lock

test: setup test-rust test-python

test-rust:
	$(CARGO_TEST)

test-python: setup
	$(VENV)/bin/python -m pytest

# Everything but the SLURM cluster test and the slow tests (a few minutes).
test-fast: setup
	$(CARGO_TEST)
	$(VENV)/bin/python -m pytest -m "not cluster and not slow"

# Only the SLURM cluster test (root: it installs and starts a one-node SLURM; docs/slurm.md).
test-cluster: setup
	$(VENV)/bin/python -m pytest -m cluster

run: setup
	$(VENV)/bin/snakemake --cores 2 all --configfile workflow/presets/quick.yaml $(RUN_FLAGS)

bench: setup
	$(VENV)/bin/python benchmarks/metrics.py
	$(VENV)/bin/python benchmarks/train.py
	$(VENV)/bin/python benchmarks/hmm.py
	$(VENV)/bin/python benchmarks/estep.py
	$(VENV)/bin/python benchmarks/stacked_statistics.py

clean:
	rm -rf $(VENV) rust_metrics/target
