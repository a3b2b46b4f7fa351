# Comparisons (config compare:): one HMM selected and fitted on the runs of several
# experiments together, every run decoded into the same states, and the conditions compared
# (results/compare/{cmp}/; contracts.ComparePaths). Each comparison's inputs are only its own
# experiments' runs, so adding a seed or a condition reruns only the comparisons holding it.


rule compare_select:
    input:
        unpack(compare_inputs),
    output:
        selection=CMP.selection_csv,
        model=CMP.model_npz,
    params:
        conditions=lambda w: COMPARISONS[w.cmp].condition_args(),
        options=lambda w: COMPARISONS[w.cmp].hmm_args(),
    threads: config["threads"]["hmm"]
    resources:
        mem_mb=4000,
        runtime=120,
    log:
        CMP.log("compare_select"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap compare-select {params.conditions} --selection-csv {output.selection} --model {output.model}"
        " {params.options} --workers {threads} --no-progress > {log} 2>&1"


rule compare:
    input:
        unpack(compare_inputs),
        model=CMP.model_npz,
    output:
        report(
            tw.comparison_report_files(),
            caption="../report/compare.rst",
            category="comparisons",
            subcategory="{cmp}",
        ),
        tw.comparison_other_outputs(),
    params:
        conditions=lambda w: COMPARISONS[w.cmp].condition_args(),
        convergence=lambda w: COMPARISONS[w.cmp].convergence_args(),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        CMP.log("compare"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap compare {params.conditions} {params.convergence} --model {input.model}"
        " --out-dir {params.out_dir} > {log} 2>&1"
