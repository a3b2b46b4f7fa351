# HMM model selection by held-out BIC, and Viterbi decoding of every run.


rule hmm_select:
    input:
        unpack(run_inputs),
    output:
        selection=report(
            EXP.selection_csv,
            caption="../report/selection.rst",
            category="{exp}",
            subcategory="model selection",
        ),
        model=EXP.model_npz,
    params:
        runs=lambda w: exp_of(w).run_dirs(),
        options=lambda w: exp_of(w).hmm_args(),
    threads: config["threads"]["hmm"]
    resources:
        mem_mb=4000,
        runtime=120,
    log:
        EXP.log("hmm_select"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap hmm-select {params.runs} --selection-csv {output.selection} --model {output.model}"
        " {params.options} --workers {threads} > {log} 2>&1"


rule hmm_decode:
    input:
        unpack(run_inputs),
        model=EXP.model_npz,
    output:
        states=EXP.states_csv,
    params:
        runs=lambda w: exp_of(w).run_dirs(),
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        EXP.log("hmm_decode"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap hmm-decode {params.runs} --model {input.model} --states {output.states} > {log} 2>&1"
