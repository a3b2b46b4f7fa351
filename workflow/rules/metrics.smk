# The 14 weight statistics of every checkpoint of a run (Rust engine).


rule metrics:
    input:
        "results/{exp}/runs/{run}/run.json",
    output:
        "results/{exp}/runs/{run}/metrics.csv",
    params:
        checkpoints=lambda w: f"{exp_of(w).run_dir(w.run)}/checkpoints",
        options=lambda w: exp_of(w).metrics_args(),
        engine=ENGINE,
    threads: config["threads"]["metrics"]
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "results/{exp}/logs/metrics/{run}.log",
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap metrics {params.checkpoints} -o {output} --threads {threads} {params.options} > {log} 2>&1"
