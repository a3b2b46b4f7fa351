# trainmap: latent state models of training dynamics (Hu et al., TMLR 2023) as a workflow.
#
#   snakemake --cores 32 results/table1.csv                      # the paper's Table 1 (config.yaml)
#   snakemake --cores 2 all --configfile workflow/presets/quick.yaml  # a laptop-sized run
#   snakemake --profile workflow/profiles/slurm results/table1.csv
#
# train -> metrics -> hmm_select -> hmm_decode -> regress -> map -> tables,
# plus baselines and figures; file contracts in docs/design.md. Rules call the trainmap CLI.

import os

from snakemake.utils import min_version

min_version("8.20")

# A --configfile that defines experiments replaces the default experiments instead of
# being merged into them (Snakemake merges config files key by key). The default sits
# beside this Snakefile, whatever the working directory (--directory).
if "experiments" not in config:

    configfile: os.path.join(workflow.basedir, "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/hmm.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/compare.smk"


rule all:
    input:
        TABLES,
        SUMMARY,
        [experiment_outputs(exp) for exp in EXPERIMENTS],
        [comparison_outputs(name) for name in COMPARISONS],
    default_target: True
