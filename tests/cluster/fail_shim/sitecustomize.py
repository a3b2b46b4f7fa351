"""Test-only: with this directory on PYTHONPATH, `trainmap metrics` fails for run 2 of the
`digits` experiment (and nothing else changes), so the cluster test can watch a job fail
on SLURM and the rerun without it resume. Python imports sitecustomize at every start-up,
so this checks the command line and does nothing in any other process."""

import sys

if len(sys.argv) > 2 and sys.argv[1] == "metrics" and any(a.rstrip("/").endswith("digits/runs/2/checkpoints") for a in sys.argv):
    sys.stderr.write("trainmap metrics: digits run 2 fails on purpose (tests/cluster/fail_shim)\n")
    sys.exit(3)
