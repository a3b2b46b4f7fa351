# Training one run (runs that exist already are read in place: rule series_metrics). Only run.json is declared: it is written last, when the
# run has ended, and Snakemake would delete the checkpoints and resume state of a killed
# job if they were declared outputs. The trainmap train command resumes such a run.


rule train:
    output:
        RUN.run_json,
    wildcard_constraints:
        exp="|".join(e.name for e in EXPERIMENTS.values() if not e.in_place and not e.batched) or "(?!)",
    params:
        task=lambda w: exp_of(w).task,
        out=lambda w: exp_of(w).run_dir(w.run),
        overrides=lambda w: exp_of(w).train_args(),
        settings=lambda w: exp_of(w).train_fingerprint(),
        device=config["device"],
    threads: config["threads"]["train"]
    resources:
        mem_mb=lambda w: exp_of(w).resources["mem_mb"],
        runtime=lambda w: exp_of(w).resources["runtime"],
        gpu=lambda w: exp_of(w).resources["gpus"],
    log:
        EXP.log("train/{run}"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap train {params.task} --seed {wildcards.run} --out {params.out} {params.overrides}"
        " --threads {threads} --device {params.device} > {log} 2>&1"



# A seed sweep (config train: {seed_batch: N}): one job trains a group of N seeds as one
# batched model and writes the group's marker (contracts.ExperimentPaths.sweep_group) when
# every seed has ended. Its runs' run.json files are not declared outputs (for the same
# reason as above); the marker stands for them. Stale-only: adding seeds adds groups (the
# earlier markers stay); a changed setting (params.settings) replans every group, whose job
# replaces each run of other settings (--replace-other-settings); a failed group writes no
# marker and leaves the other groups' runs complete. With train: {keep_checkpoints: false}
# the job also writes each run's metrics.csv (statistics in the loop, no checkpoint files):
# the marker stands for them too, and no metrics job is planned (rule metrics excludes the
# experiment; common.smk's run_inputs lists the markers only).


rule train_sweep:
    output:
        EXP.sweep_marker("{group}"),
    wildcard_constraints:
        exp="|".join(e.name for e in EXPERIMENTS.values() if e.batched) or "(?!)",
    params:
        task=lambda w: exp_of(w).task,
        out=lambda w: exp_of(w).runs_dir(),
        seeds=lambda w: ",".join(exp_of(w).group_runs(w.group)),
        overrides=lambda w: exp_of(w).sweep_args(),
        settings=lambda w: exp_of(w).train_fingerprint(),
        device=config["device"],
    threads: config["threads"]["train"]
    resources:
        mem_mb=lambda w: exp_of(w).resources["mem_mb"],
        runtime=lambda w: exp_of(w).resources["runtime"],
        gpu=lambda w: exp_of(w).resources["gpus"],
    log:
        EXP.log("train/sweep-{group}"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap train-sweep --task {params.task} --seeds {params.seeds} --out-dir {params.out}"
        " {params.overrides} --replace-other-settings --group-file {output}"
        " --threads {threads} --device {params.device} > {log} 2>&1"
