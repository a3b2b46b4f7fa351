"""Model-selection recovery at the sizes researchers have: planted-structure runs
(tests/synthetic_runs.py ``write_planted_runs``: init → [detour] → converged, 14
correlated statistics) at (runs, records per run) ∈ {5, 10, 20, 40} × {20, 50, 200}, each
analysed twice on the same data in the same process:

* **old defaults**: the selection code of commit ``BASELINE`` (before issue 18), loaded
  from git: full covariance, one 80/20 split of runs, hmmlearn's M-step without a
  covariance floor;
* **new defaults**: ``trainmap.analysis.hmm_select`` as it is (covariance auto, folds
  over runs below 30 runs, covariance floor scaled to the data).

Per cell and method: the states and covariance chosen, failed fits, the adjusted Rand
index (ARI) of the decoded against the planted states, whether the planted states are
told apart (ARI ≥ 0.8: the three are separated, some possibly split further) and whether
the planted detour is found (the decoded state holding most detour checkpoints is flagged
a detour state by the regression of convergence on occupancy, and is not the state of
most init or converged checkpoints). Prints a Markdown table (docs/analysis.md quotes it).

    python benchmarks/selection_recovery.py [--runs 5 10 20 40] [--records 20 50 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from synthetic_runs import CONVERGED, DETOUR, INIT, write_planted_runs  # noqa: E402

from trainmap.analysis.convergence import Criterion, convergence_table  # noqa: E402
from trainmap.analysis.hmm_model import decode_states  # noqa: E402
from trainmap.analysis.hmm_select import select_hmm  # noqa: E402
from trainmap.analysis.regression import occupancy, state_regression  # noqa: E402
from trainmap.analysis.runs import load_runs, prepare_trajectories  # noqa: E402
from trainmap.options import HMMSelectOptions  # noqa: E402

#: main before issue 18 ("answers on a researcher's own runs").
BASELINE = "d40c466"


def old_select_hmm(folder: Path):
    """``select_hmm`` of commit BASELINE, with that commit's E-step module, written into
    ``folder`` as modules that worker processes can import too."""
    import importlib
    import os

    def source(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE}:{path}"], check=True,
                              capture_output=True, text=True).stdout

    (folder / "old_hmm_estep.py").write_text(source("python/trainmap/analysis/hmm_estep.py"))
    (folder / "old_hmm_select.py").write_text(source("python/trainmap/analysis/hmm_select.py").replace(
        "from trainmap.analysis.hmm_estep import gaussian_hmm_class", "from old_hmm_estep import gaussian_hmm_class"))
    sys.path.insert(0, str(folder))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    return importlib.import_module("old_hmm_select").select_hmm


def recovery(exp, model, data, run_ids) -> tuple[float, bool]:
    """Adjusted Rand index of decoded against planted states, and whether the planted
    detour state is found (module docstring)."""
    from sklearn.metrics import adjusted_rand_score

    paths = dict(zip(run_ids, decode_states(model, data)))
    truth = np.concatenate([exp.true_states[r] for r in run_ids])
    decoded = np.concatenate([paths[r] for r in run_ids])
    ari = float(adjusted_rand_score(truth, decoded))

    def majority(state):
        return int(np.bincount(decoded[truth == state]).argmax())

    conv = convergence_table({r: run.log for r, run in zip(run_ids, load_runs([exp.root / r for r in run_ids]))},
                             Criterion.from_threshold(0.9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = state_regression(occupancy(paths, int(model.n_components)), conv["convergence_step"])
    detour = majority(DETOUR)
    found = detour in reg.detour_states and detour not in (majority(INIT), majority(CONVERGED))
    return ari, found


def cell(n_runs: int, n_records: int, workers: int, old) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        exp = write_planted_runs(Path(tmp), n_runs=n_runs, n_records=n_records, seed=n_runs * 1000 + n_records)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traj = prepare_trajectories(load_runs(exp.run_dirs), zscore_first_n=exp.zscore_first_n)
        for method, select, options in (
            ("old defaults", old, HMMSelectOptions(covariance="full", workers=workers)),
            ("new defaults", select_hmm, HMMSelectOptions(workers=workers)),
        ):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sel = select(traj.data, options)
            seconds = time.perf_counter() - start
            failed = int((sel.table["status"] != "ok").sum())
            ari, detour = recovery(exp, sel.model, traj.data, traj.run_ids)
            rows.append({
                "runs": n_runs, "records": n_records, "method": method,
                "covariance": getattr(sel, "covariance", options.covariance), "states": sel.n_components,
                "folds": getattr(sel, "folds", 1), "failed fits": f"{failed}/{len(sel.table)}",
                "ARI": round(ari, 2), "states recovered": ari >= 0.8,
                "detour recovered": detour, "seconds": round(seconds, 1),
            })
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--records", type=int, nargs="+", default=[20, 50, 200])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        old = old_select_hmm(Path(folder))
        rows = [row for n in args.runs for t in args.records for row in cell(n, t, args.workers, old)]
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    for method, group in table.groupby("method", sort=False):
        print(f"{method}: states recovered in {int(group['states recovered'].sum())}/{len(group)} cells, "
              f"detour in {int(group['detour recovered'].sum())}/{len(group)}, "
              f"cells with a failed fit {int((group['failed fits'].str.split('/').str[0].astype(int) > 0).sum())}")


if __name__ == "__main__":
    main()
