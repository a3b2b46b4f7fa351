# Training one run (runs that exist already are read in place: rule series_metrics). Only run.json is declared: it is written last, when the
# run has ended, and Snakemake would delete the checkpoints and resume state of a killed
# job if they were declared outputs. The trainmap train command resumes such a run.


rule train:
    output:
        "results/{exp}/runs/{run}/run.json",
    wildcard_constraints:
        exp="|".join(e.name for e in EXPERIMENTS.values() if not e.in_place) or "(?!)",
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
        "results/{exp}/logs/train/{run}.log",
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap train {params.task} --seed {wildcards.run} --out {params.out} {params.overrides}"
        " --threads {threads} --device {params.device} > {log} 2>&1"

