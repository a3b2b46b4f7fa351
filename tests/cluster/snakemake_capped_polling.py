"""``python -m snakemake`` for the cluster test, with the SLURM executor's pause between
status checks capped at :data:`CAP_SECONDS`.

snakemake-executor-plugin-slurm 2.x lengthens that pause by 10 s after every round of
checks in which no job finished (up to 180 s), which suits a real cluster's long jobs. The
test workflow's jobs take a few seconds each, so the back-off, not the jobs, made up most
of the cluster test's wall time (a 6-minute workflow run for 40 s of work). Only the
waiting changes: every job is still submitted, polled and reported by the plugin itself.
"""

from __future__ import annotations

import asyncio

from snakemake_executor_plugin_slurm import Executor

CAP_SECONDS = 3.0


async def _capped_sleep(self) -> None:
    await asyncio.sleep(min(self.next_seconds_between_status_checks, CAP_SECONDS))


Executor.sleep = _capped_sleep

if __name__ == "__main__":
    from snakemake.cli import main

    main()
