# Per experiment: the detour regression (convergence steps, detour states, forking), then the
# training map that draws them, the baselines and the figures.


rule regress:
    input:
        unpack(regress_inputs),
        model=EXP.model_npz,
        states=EXP.states_csv,
    output:
        regression=EXP.regression_json,
        convergence=EXP.convergence_csv,
        coefficients=report(
            EXP.coefficients_csv,
            caption="../report/coefficients.rst",
            category="{exp}",
            subcategory="detour states",
        ),
    params:
        runs=lambda w: exp_of(w).run_dirs(),
        convergence=lambda w: exp_of(w).convergence_arg(),
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        EXP.log("regress"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap regress {params.runs} --model {input.model} --states {input.states} {params.convergence}"
        " --out {output.regression} --coefficients {output.coefficients}"
        " --convergence-csv {output.convergence} --experiment {wildcards.exp} > {log} 2>&1"


rule map:
    input:
        unpack(run_inputs),
        model=EXP.model_npz,
        states=EXP.states_csv,
        regression=EXP.regression_json,
        coefficients=EXP.coefficients_csv,
    output:
        edges=report(
            EXP.edges_csv,
            caption="../report/edges.rst",
            category="{exp}",
            subcategory="training map",
        ),
        svg=report(
            EXP.map_svg,
            caption="../report/training_map.rst",
            category="{exp}",
            subcategory="training map",
        ),
        png=EXP.map_png,
        html=report(
            EXP.map_html,
            caption="../report/training_map_html.rst",
            category="{exp}",
            subcategory="training map",
        ),
    params:
        runs=lambda w: exp_of(w).run_dirs(),
        convergence=lambda w: exp_of(w).convergence_arg(),
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        EXP.log("map"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap map {params.runs} --model {input.model} --states {input.states} --regression {input.regression}"
        " --coefficients {input.coefficients}"
        " {params.convergence} --edges {output.edges} --svg {output.svg} --png {output.png} --html {output.html}"
        " --experiment {wildcards.exp} > {log} 2>&1"


rule baselines:
    input:
        unpack(run_inputs),
    output:
        EXP.baselines_csv,
    params:
        runs=lambda w: exp_of(w).run_dirs(),
        options=lambda w: exp_of(w).baseline_args(),
    threads: config["threads"]["hmm"]
    resources:
        mem_mb=4000,
        runtime=120,
    log:
        EXP.log("baselines"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap baselines {params.runs} --out {output} {params.options} --workers {threads}"
        " > {log} 2>&1"


rule figures:
    input:
        unpack(run_inputs),
        selection=EXP.selection_csv,
        states=EXP.states_csv,
        convergence=EXP.convergence_csv,
    output:
        report(
            tw.figure_files(),
            caption="../report/figures.rst",
            category="{exp}",
            subcategory="figures",
        ),
    params:
        runs=lambda w: exp_of(w).run_dirs(),
        convergence=lambda w: exp_of(w).convergence_arg(),
        out_dir=EXP.figures_dir,
        shown=lambda w: exp_of(w).figures_args(),
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        EXP.log("figures"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap figures {params.runs} --selection-csv {input.selection} --states {input.states}"
        " --convergence-csv {input.convergence} {params.convergence} {params.shown} --out-dir {params.out_dir} --experiment {wildcards.exp} > {log} 2>&1"


rule early:
    input:
        unpack(run_inputs),
        model=EXP.model_npz,
        convergence=EXP.convergence_csv,
    output:
        early=EXP.early_csv,
        figure=[EXP.figure("early", "png"), EXP.figure("early", "svg")],
    params:
        runs=lambda w: exp_of(w).run_dirs(),
        stem=lambda w, output: output.figure[0][: -len(".png")],
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        EXP.log("early"),
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap early {params.runs} --model {input.model} --convergence-csv {input.convergence}"
        " --out {output.early} --figure {params.stem} --experiment {wildcards.exp} > {log} 2>&1"
