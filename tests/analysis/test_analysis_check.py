"""``trainmap check``: each kind of run directory described, and the verdict on what the
analysis can support (runs, records, states per covariance, censoring, unequal runs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from existing_runs import write_checkpoint_run, write_recorder_run
from synthetic_runs import write_planted_runs
from trainmap.analysis.check import check_runs, supported_states
from trainmap.analysis.convergence import Criterion
from trainmap.analysis.hmm_select import n_free_parameters
from trainmap.cli import main

STEPS = list(range(0, 200, 10))


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """One run directory of every kind: a Recorder run, a directory of step*.safetensors
    files, one of checkpoint-N/ directories with trainer_state.json, a run trained here,
    and a run already read in place into results/ by series-metrics."""
    root = tmp_path_factory.mktemp("check")
    write_recorder_run(root / "recorder", 0, STEPS, switch=0.3)
    write_checkpoint_run(root / "files", 1, STEPS, switch=1.2)  # accuracy never reaches 0.5
    dirs = root / "dirs"
    from safetensors.numpy import save_file
    from existing_runs import weights

    history = []
    for step in (10, 20, 30):
        (dirs / f"checkpoint-{step}").mkdir(parents=True)
        save_file(weights(2, step, 30, 0.5), str(dirs / f"checkpoint-{step}" / "model.safetensors"))
        history.append({"step": step, "eval_accuracy": step / 30, "eval_loss": 1 - step / 30})
        (dirs / f"checkpoint-{step}" / "trainer_state.json").write_text(
            json.dumps({"global_step": step, "log_history": list(history)}))
    trained = write_planted_runs(root / "trained", n_runs=1, n_records=20).run_dirs[0]
    assert main(["series-metrics", str(root / "files"), "--out-dir", str(root / "results" / "files_read"),
                 "--no-progress"]) == 0
    return root, trained


def test_every_kind_of_run_directory_is_described(kinds):
    root, trained = kinds
    report = check_runs([root / "recorder", root / "files", root / "dirs", trained, root / "results" / "files_read"],
                        Criterion.from_threshold(0.5))
    rows = {row["run"]: row for row in report.table.to_dict("records")}
    assert rows["recorder"]["kind"] == "Recorder run (complete)"
    assert rows["files"]["kind"] == "checkpoint directory (files layout)"
    assert rows["dirs"]["kind"] == "checkpoint directory (dirs layout)"
    assert rows[trained.name]["kind"] == "trained here (task planted)"
    assert rows["files_read"]["kind"] == f"read in place from {root / 'files'} (files)"
    assert rows["files_read"]["records"] == rows["files"]["records"] == 20
    assert (rows["recorder"]["records"], rows["recorder"]["steps"], rows["recorder"]["every"]) == (20, "0–190", "10")
    assert rows["dirs"]["records"] == 3 and rows["dirs"]["steps"] == "10–30"
    assert rows["dirs"]["log"] == ", ".join(f"checkpoint-{s}/trainer_state.json (trainer_state)" for s in (10, 20, 30))
    assert rows["recorder"]["log"] == "log.csv (log_csv)" and "eval_accuracy" in rows["recorder"]["columns"]
    # Where each meets eval_accuracy > 0.5, or never (censored), with the best value reached.
    assert rows["recorder"]["eval_accuracy>0.5"].startswith("step ")
    assert rows["dirs"]["eval_accuracy>0.5"] == "step 20"
    assert rows["files"]["eval_accuracy>0.5"].startswith("never (best 0.")


def test_the_verdict_names_what_limits_the_analysis(kinds):
    root, trained = kinds
    report = check_runs([root / "recorder", root / "files", root / "dirs", trained], Criterion.from_threshold(0.5))
    text = report.render()
    assert "4 usable run(s): too few — the analysis needs at least 5 runs" in text
    assert "1 of 4 runs never meet eval_accuracy>0.5: they are censored" in text
    assert "unequal runs: run(s) ending at another step than the median run's" in text
    assert "train more seeds" in text and "record more often" in text
    assert report.supported == supported_states(63, 4)
    missing = check_runs([root / "recorder"], Criterion("eval_bleu", "above", 30))
    assert "log 'eval_bleu' at every evaluation, or choose a criterion on a logged column" in missing.render()
    never = check_runs([root / "files"], Criterion.from_threshold(5.0)).render()
    assert "no run meets eval_accuracy>5 (best value reached:" in never


def test_supported_states_follow_the_parameter_count():
    # The paper's scale: 40 runs x 1000 checkpoints carry the full-covariance 8 states.
    assert supported_states(40_000, 40) == {"full": 8, "diag": 8, "tied": 8}
    # Ten runs of 50 records: full covariance cannot carry two states.
    small = supported_states(500, 10)
    assert small["full"] == 1 and small["diag"] >= 3 and small["tied"] >= 3
    fitted = 500 * 4 / 5
    for cov, n in small.items():
        assert n_free_parameters(n, 14, cov) * 2 <= fitted < n_free_parameters(n + 1, 14, cov) * 2
    assert supported_states(20, 5) == {"full": 0, "diag": 0, "tied": 0}


def test_check_on_the_command_line(kinds, tmp_path, capsys):
    root, trained = kinds
    out = tmp_path / "check.json"
    assert main(["check", str(root / "recorder"), str(trained), "--threshold", "0.5", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("run ") and "Verdict:" in printed and "Recorder run (complete)" in printed
    saved = json.loads(out.read_text())
    assert [r["run"] for r in saved["runs"]] == ["recorder", trained.name]
    assert saved["verdict"] and saved["supported_states"]["diag"] >= 0
    assert np.isfinite(saved["supported_states"]["full"])
