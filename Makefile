# Front door. `make run` sets up .venv and runs the quick workflow; `make test` sets up
# .venv and runs every test (cargo and pytest). Both are safe to repeat.
VENV      := .venv
STAMP     := $(VENV)/.trainmap-installed
RUST_SRC  := $(shell find rust_metrics/src -name '*.rs') rust_metrics/Cargo.toml rust_metrics/Cargo.lock
CARGO_TEST := cargo test --release --manifest-path rust_metrics/Cargo.toml

.PHONY: setup test test-rust test-python test-cluster run bench clean

$(STAMP): pyproject.toml scripts/setup.sh $(RUST_SRC)
	scripts/setup.sh
	touch $@

setup: $(STAMP)

test: setup test-rust test-python

test-rust:
	$(CARGO_TEST)

test-python: setup
	$(VENV)/bin/python -m pytest

# Only the SLURM cluster test (root: it installs and starts a one-node SLURM; docs/slurm.md).
test-cluster: setup
	$(VENV)/bin/python -m pytest -m cluster

run: setup
	$(VENV)/bin/snakemake --cores 2 --configfile workflow/presets/quick.yaml all

bench: setup
	$(VENV)/bin/python benchmarks/metrics.py
	$(VENV)/bin/python benchmarks/train.py
	$(VENV)/bin/python benchmarks/hmm.py

clean:
	rm -rf $(VENV) rust_metrics/target
