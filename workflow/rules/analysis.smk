# Per experiment: the detour regression (convergence steps, detour states, forking), then the
# training map that draws them, the baselines and the figures.


rule regress:
    input:
        unpack(regress_inputs),
        model="results/{exp}/hmm/model.npz",
        states="results/{exp}/hmm/states.csv",
    output:
        regression="results/{exp}/regression.json",
        convergence="results/{exp}/convergence.csv",
        coefficients=report(
            "results/{exp}/coefficients.csv",
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
        "results/{exp}/logs/regress.log",
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap regress {params.runs} --model {input.model} --states {input.states} {params.convergence}"
        " --out {output.regression} --coefficients {output.coefficients}"
        " --convergence-csv {output.convergence} --experiment {wildcards.exp} > {log} 2>&1"


rule map:
    input:
        unpack(run_inputs),
        model="results/{exp}/hmm/model.npz",
        states="results/{exp}/hmm/states.csv",
        regression="results/{exp}/regression.json",
        coefficients="results/{exp}/coefficients.csv",
    output:
        edges=report(
            "results/{exp}/map/edges.csv",
            caption="../report/edges.rst",
            category="{exp}",
            subcategory="training map",
        ),
        svg=report(
            "results/{exp}/map/training_map.svg",
            caption="../report/training_map.rst",
            category="{exp}",
            subcategory="training map",
        ),
        png="results/{exp}/map/training_map.png",
        html=report(
            "results/{exp}/map/training_map.html",
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
        "results/{exp}/logs/map.log",
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
        "results/{exp}/baselines.csv",
    params:
        runs=lambda w: exp_of(w).run_dirs(),
        options=lambda w: exp_of(w).baseline_args(),
    threads: config["threads"]["hmm"]
    resources:
        mem_mb=4000,
        runtime=120,
    log:
        "results/{exp}/logs/baselines.log",
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap baselines {params.runs} --out {output} {params.options} --workers {threads}"
        " > {log} 2>&1"


rule figures:
    input:
        unpack(run_inputs),
        selection="results/{exp}/hmm/selection.csv",
        states="results/{exp}/hmm/states.csv",
        convergence="results/{exp}/convergence.csv",
    output:
        report(
            expand("results/{{exp}}/figures/{fig}.{ext}", fig=FIGURES, ext=("png", "svg")),
            caption="../report/figures.rst",
            category="{exp}",
            subcategory="figures",
        ),
    params:
        runs=lambda w: exp_of(w).run_dirs(),
        convergence=lambda w: exp_of(w).convergence_arg(),
        out_dir="results/{exp}/figures",
        shown=lambda w: f"--fast {exp_of(w).figures['fast']} --slow {exp_of(w).figures['slow']}",
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        "results/{exp}/logs/figures.log",
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap figures {params.runs} --selection-csv {input.selection} --states {input.states}"
        " --convergence-csv {input.convergence} {params.convergence} {params.shown} --out-dir {params.out_dir} --experiment {wildcards.exp} > {log} 2>&1"


rule early:
    input:
        unpack(run_inputs),
        model="results/{exp}/hmm/model.npz",
        convergence="results/{exp}/convergence.csv",
    output:
        early="results/{exp}/early.csv",
        figure=multiext("results/{exp}/figures/early", ".png", ".svg"),
    params:
        runs=lambda w: exp_of(w).run_dirs(),
        stem=lambda w, output: output.figure[0][: -len(".png")],
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        "results/{exp}/logs/early.log",
    conda:
        "../../envs/trainmap.yaml"
    shell:
        "trainmap early {params.runs} --model {input.model} --convergence-csv {input.convergence}"
        " --out {output.early} --figure {params.stem} --experiment {wildcards.exp} > {log} 2>&1"
