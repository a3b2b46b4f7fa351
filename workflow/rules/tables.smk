# The paper's Tables 1, 2 and 4 across all experiments, as CSV and Markdown.


rule tables:
    input:
        unpack(table_inputs),
    output:
        report(
            TABLES,
            caption="../report/tables.rst",
            category="tables",
        ),
        summary=report(SUMMARY, caption="../report/summary.rst", category="tables"),
    params:
        experiments=tw.table_experiment_args(EXPERIMENTS),
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        tw.TABLES_LOG,
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap tables {params.experiments} --out-dir results > {log} 2>&1"
