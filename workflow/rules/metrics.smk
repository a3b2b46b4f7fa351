# The 14 weight statistics of every checkpoint of a run (Rust engine). Not for experiments
# with statistics in the loop (train: {keep_checkpoints: false}): their sweep jobs write
# metrics.csv.


rule metrics:
    input:
        lambda w: exp_of(w).trained_marker(w.run),
    output:
        RUN.metrics_csv,
    wildcard_constraints:
        exp="|".join(e.name for e in EXPERIMENTS.values() if not e.in_place and not e.statistics_in_loop) or "(?!)",
    params:
        checkpoints=lambda w: exp_of(w).checkpoints_dir(w.run),
        options=lambda w: exp_of(w).metrics_args(),
        device=lambda w: exp_of(w).device_arg(),
        engine=ENGINE,
    threads: config["threads"]["metrics"]
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        EXP.log("metrics/{run}"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap metrics {params.checkpoints} -o {output} --threads {threads} {params.options} {params.device}"
        " > {log} 2>&1"


# A run directory that exists already (config runs:/sources:), read where it lies. Its
# inputs are the run's checkpoint files and logs, listed when the DAG is built: a new
# checkpoint or a changed log in one run directory makes that run's job stale, no other.


rule series_metrics:
    input:
        unpack(lambda w: exp_of(w).series_job_inputs(w.run)),
    output:
        metrics=RUN.metrics_csv,
        log=RUN.log_csv,
        integrity=RUN.integrity_json,
        record=RUN.run_json,
    wildcard_constraints:
        exp="|".join(e.name for e in EXPERIMENTS.values() if e.in_place) or "(?!)",
    params:
        source=lambda w: exp_of(w).sources[w.run],
        out_dir=lambda w: exp_of(w).run_dir(w.run),
        options=lambda w: exp_of(w).metrics_args(),
        chunks=lambda w, input: f"--from-chunks {' '.join(input.chunks)}" if input.chunks else "",
        device=lambda w: exp_of(w).device_arg(),
        run_log=lambda w: exp_of(w).log_args(),
        engine=ENGINE,
    threads: config["threads"]["metrics"]
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        EXP.log("metrics/{run}"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap series-metrics {params.source:q} --out-dir {params.out_dir} --threads {threads} {params.options}"
        " {params.device} {params.run_log} {params.chunks} > {log} 2>&1"


# With metrics: {chunk: N}, an in-place run's checkpoints are split into jobs of N (in step
# order), each with only its checkpoints as inputs, gathered by series_metrics above: a long
# series spreads over cluster nodes, and a changed checkpoint reruns its chunk and the gather.


rule series_metrics_chunk:
    input:
        lambda w: exp_of(w).chunk_inputs(w.run, int(w.chunk)),
    output:
        RUN.metrics_chunk("{chunk}"),
    wildcard_constraints:
        exp="|".join(e.name for e in EXPERIMENTS.values() if e.in_place) or "(?!)",
        run="[^/]+",
        chunk=r"\d+",
    params:
        source=lambda w: exp_of(w).sources[w.run],
        size=lambda w: exp_of(w).metrics_chunk,
        options=lambda w: exp_of(w).metrics_args(),
        device=lambda w: exp_of(w).device_arg(),
        engine=ENGINE,
    threads: config["threads"]["metrics"]
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        EXP.log("metrics/{run}.chunk{chunk}"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap series-metrics-chunk {params.source:q} --index {wildcards.chunk} --size {params.size} -o {output}"
        " --threads {threads} {params.options} {params.device} > {log} 2>&1"
