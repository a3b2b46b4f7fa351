"""The one-node SLURM test cluster: start/stop scripts, the stand-in workflow, the harness."""
