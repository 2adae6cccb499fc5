# The experiment folder holds the current config's outputs only: outputs.json lists them, and
# files of earlier configs are moved to stale/<timestamp>/ (onstart in the Snakefile, and here).


rule outputs:
    input:
        get_all_outputs,
    output:
        result("outputs.json"),
    log:
        result("logs/outputs.log"),
    localrule: True
    conda:
        "../../envs/vitprobe.yaml"
    params:
        # The list itself: a config that drops or adds outputs reruns this rule (so a run happens
        # and the onstart handler moves the dropped files away).
        files=get_output_listing,
        out_dir=get_output_folder,
        code=code("outputs.py"),
    message:
        "outputs, log: {log}"
    script:
        "../scripts/outputs.py"
