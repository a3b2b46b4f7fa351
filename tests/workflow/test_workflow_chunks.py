"""Config ``metrics: {chunk: N}``: an in-place run's checkpoints computed in jobs of N and
gathered into metrics.csv, byte for byte the unchunked file; a changed checkpoint re-plans
only its chunk and the gather."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

import trainmap.workflow as tw
from safetensors.numpy import save_file

from existing_runs import weights, write_checkpoint_run, write_recorder_run
from snakemake_runner import REPO, dry_run, snakemake
from trainmap.metrics.engine import DEFAULT_EXCLUDE
from trainmap.metrics.series import SeriesError, discover
from trainmap.metrics.series_chunks import chunk_count, chunk_input_files, write_chunk
from trainmap.metrics.series_metrics import series_metrics

STEPS = list(range(0, 70, 10))  # 7 checkpoints: chunks of 3 are 3 + 3 + 1
OPTIONS = {"svd": "auto", "include": None, "exclude": None, "exact_max_dim": 2048, "rank": 64}


def chunked(source: Path, chunks_dir: Path, size: int) -> list[Path]:
    """Every chunk file of ``source``, written by write_chunk."""
    paths = []
    for index in range(chunk_count(len(discover(source).checkpoints), size)):
        paths.append(chunks_dir / f"{index}.json")
        write_chunk(source, paths[-1], index=index, size=size, options=OPTIONS)
    return paths


@pytest.mark.parametrize("size", [1, 3, 7, 50])
def test_gathered_chunks_equal_the_unchunked_files_byte_for_byte(tmp_path, size):
    source = write_checkpoint_run(tmp_path / "run", 0, STEPS)
    whole = series_metrics(source, tmp_path / "whole", **OPTIONS)
    files = chunked(source, tmp_path / "chunks", size)
    gathered = series_metrics(source, tmp_path / "gathered", **OPTIONS, chunk_files=files[::-1])  # any order
    for name in ("metrics.csv", "log.csv", "integrity.json"):
        assert (tmp_path / "gathered" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert gathered == whole
    assert len(files) == -(-len(STEPS) // size)


def test_missing_or_stale_chunks_are_errors_naming_them(tmp_path):
    source = write_checkpoint_run(tmp_path / "run", 0, STEPS)
    files = chunked(source, tmp_path / "chunks", 3)
    with pytest.raises(SeriesError, match="hold steps 6 steps.*the series has 7 steps"):
        series_metrics(source, tmp_path / "out", **OPTIONS, chunk_files=files[:2])
    with pytest.raises(SeriesError, match=r"0\.json: computed with another options"):
        series_metrics(source, tmp_path / "out", **{**OPTIONS, "exclude": ""}, chunk_files=files)
    assert not (tmp_path / "out" / "metrics.csv").exists()
    with pytest.raises(ValueError, match="chunk 3 does not exist"):
        write_chunk(source, tmp_path / "x.json", index=3, size=3, options=OPTIONS)


def test_chunk_inputs_are_its_checkpoints_only(tmp_path):
    source = write_checkpoint_run(tmp_path / "run", 0, STEPS)
    series = discover(source)
    assert [Path(f).name for f in chunk_input_files(series, 1, 3)] == [f"step{s}.safetensors" for s in (30, 40, 50)]
    assert [Path(f).name for f in chunk_input_files(series, 2, 3)] == ["step60.safetensors"]


def resolve(config: dict) -> dict[str, tw.Experiment]:
    return tw.experiments(tw.validate_config(config, tw.load_schema(REPO / "workflow/schemas/config.schema.yaml")))


def test_chunk_config_key(tmp_path):
    run = write_checkpoint_run(tmp_path / "run", 0, STEPS)
    exp = resolve({"experiments": {"mine": {"runs": {"a": str(run)}, "threshold": 0.5, "metrics": {"chunk": 3}}}})["mine"]
    assert exp.metrics_chunks("a") == [0, 1, 2]
    inputs = exp.series_job_inputs("a")
    assert inputs["chunks"] == [f"results/mine/runs/a/metrics_chunks/{i}.json" for i in range(3)]
    assert [Path(f).name for f in inputs["files"]] == ["log.csv"]  # checkpoints belong to the chunk jobs
    with pytest.raises(tw.ConfigError, match="experiments.mine.metrics.chunk"):
        resolve({"experiments": {"mine": {"runs": {"a": str(run)}, "threshold": 0.5, "metrics": {"chunk": 0}}}})
    with pytest.raises(tw.ConfigError, match="experiments.t.metrics.chunk: chunks apply to runs read in place"):
        resolve({"experiments": {"t": {"task": "parities", "seeds": 1, "metrics": {"chunk": 3}}}})
    # A Recorder run whose metrics.csv is adopted has nothing to compute: no chunk jobs.
    write_recorder_run(tmp_path / "rec", 1, STEPS, keep_checkpoints=True)
    adopted = resolve({"experiments": {"r": {"runs": {"b": str(tmp_path / "rec")}, "threshold": 0.5,
                                             "metrics": {"chunk": 3}}}})["r"]
    assert adopted.metrics_chunks("b") == []


def later(path: Path, than: Path) -> None:
    """Make ``path`` newer than anything under ``than``."""
    stamp = max(p.stat().st_mtime for p in than.rglob("*") if p.is_file()) + 10
    os.utime(path, (stamp, stamp))


@pytest.mark.slow
def test_a_real_chunked_run_and_what_a_changed_checkpoint_replans(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        write_checkpoint_run(sweep / f"seed_{seed}", seed, STEPS)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"threads": {"metrics": 1, "hmm": 1}, "experiments": {"mine": {
        "runs": f"{sweep}/seed_*", "threshold": 0.5, "metrics": {"chunk": 3}}}}))
    workdir = tmp_path / "work"
    targets = [f"results/mine/runs/seed_{seed}/metrics.csv" for seed in (0, 1)]
    planned = dry_run(workdir, *targets, "--configfile", str(config))
    jobs = sorted((rule, w.get("run"), w.get("chunk")) for rule, w in planned if rule.startswith("series_metrics"))
    assert jobs == sorted([("series_metrics_chunk", f"seed_{s}", str(c)) for s in (0, 1) for c in range(3)]
                          + [("series_metrics", f"seed_{s}", None) for s in (0, 1)])

    result = snakemake(workdir, *targets, "--cores", "2", "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    unchunked = tmp_path / "unchunked"
    series_metrics(sweep / "seed_1", unchunked, **OPTIONS)
    assert (workdir / targets[1]).read_bytes() == (unchunked / "metrics.csv").read_bytes()

    changed = sweep / "seed_1" / "step40.safetensors"  # in chunk 1 of seed_1
    save_file(weights(5, 40, 60, 0.5), str(changed))
    later(changed, workdir)
    planned = dry_run(workdir, *targets, "--configfile", str(config))
    assert sorted((rule, w.get("run"), w.get("chunk")) for rule, w in planned if rule.startswith("series_metrics")) \
        == [("series_metrics", "seed_1", None), ("series_metrics_chunk", "seed_1", "1")]
