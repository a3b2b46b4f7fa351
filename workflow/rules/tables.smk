# The paper's Tables 1, 2 and 4 across all experiments, as CSV and Markdown.


rule tables:
    input:
        unpack(table_inputs),
    output:
        report(
            expand("results/table{n}.{ext}", n=(1, 2, 4), ext=("csv", "md")),
            caption="../report/tables.rst",
            category="tables",
        ),
        summary=report(SUMMARY, caption="../report/summary.rst", category="tables"),
    params:
        experiments=" ".join(f"--experiment {name}=results/{name}" for name in EXPERIMENTS),
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "results/logs/tables.log",
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap tables {params.experiments} --out-dir results > {log} 2>&1"
