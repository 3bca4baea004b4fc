# pirid_lite — every target builds the locked environment itself from nothing but python3 + make.
PYTHON_BOOTSTRAP ?= python3
UV_VERSION       := 0.13.8
TOOLS            := .tools
UV               := $(TOOLS)/bin/uv
VENV             := .venv
PY               := $(VENV)/bin/python
STAMP            := $(VENV)/.synced
SEED             ?= 0
LAB_IP           ?= 127.0.0.1
LAB_PORT         ?= 8888

.PHONY: help env demo test test-fast notebooks lab reproduce benchmarks lint clean gpu-check

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

$(UV):
	$(PYTHON_BOOTSTRAP) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

# JupyterLab reads <sys-prefix>/share/jupyter/lab/settings/overrides.json: autosave off (and no news pop-up), so
# that opening and running a notebook in `make lab` leaves the clone as it was unless the reader saves on purpose.
LAB_OVERRIDES    := pirid_lite/notebook/lab_overrides.json
$(STAMP): $(UV) pyproject.toml uv.lock $(LAB_OVERRIDES)
	$(UV) sync --frozen
	install -D -m 644 $(LAB_OVERRIDES) $(VENV)/share/jupyter/lab/settings/overrides.json
	@touch $(STAMP)

# Bytecode for `make test`: where PYTHONDONTWRITEBYTECODE=1 is set (as on the project's CI machines) Python never
# writes .pyc files, so each of the dozens of processes the tests start would compile torch, scipy, sympy and
# scikit-learn again (~5 s each); compiled once here (~25 s on both cores), every process reads them. The packages'
# own test folders are never imported, so they are left out. `make demo` (one process) skips it.
PYC_STAMP        := $(VENV)/.compiled
$(PYC_STAMP): $(STAMP)
	$(PY) -m compileall -q -j 0 -x '/tests/|/torch/testing/_internal/py31[2-9]_' $(VENV)/lib pirid_lite benchmarks
	@touch $(PYC_STAMP)

env: $(STAMP)  ## create .venv from uv.lock (torch 2.13 + torchvision 0.28, pinned)

demo: $(STAMP)  ## generate the synthetic `small` benchmark, train PIRID (cpu profile), evaluate
	$(PY) -m pirid_lite demo --seed $(SEED)

# Two pytest worker processes, one per core, each torch on one thread (OMP_NUM_THREADS=1, inherited by the
# subprocesses tests start): on 2 cores that beats one process with two threads. One session for the unit tests,
# the benchmark smoke runs and the notebooks, so that neither core idles while the other ends a phase; loadfile
# keeps a file's tests (and its module fixtures) on one worker, and a notebook's cells in order; files are dealt
# longest first (tests/conftest.py, LONGEST_FIRST, then the notebooks), an order xdist would otherwise replace by
# the number of tests per file. The notebooks' kernels inherit PIRID_NOTEBOOK_MODE=test (tests that read the mode
# set it themselves).
TEST_WORKERS ?= 2
test: $(STAMP) $(PYC_STAMP)  ## unit tests, benchmark smoke runs and every notebook under nbval
	OMP_NUM_THREADS=1 PIRID_NOTEBOOK_MODE=test $(PY) -m pytest notebooks tests benchmarks --nbval-lax \
	  --nbval-current-env -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	  --durations=12

test-fast: $(STAMP)  ## unit tests only
	$(PY) -m pytest tests -q -m "not slow"

notebooks: $(STAMP)  ## re-execute the six notebooks in place in full mode (what their committed outputs show; rewrites results/figures)
	for nb in notebooks/0*.ipynb; do PIRID_WRITE_FIGURES=1 $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	  --ExecutePreprocessor.timeout=3600 "$$nb" || exit 1; done

lab: $(STAMP)  ## open the notebooks in JupyterLab (prints the URL; LAB_IP=0.0.0.0 / LAB_PORT=... to change; root adds --allow-root)
	@token=$$($(PY) -c 'import secrets; print(secrets.token_hex(24))') && [ -n "$$token" ] || exit 1; \
	host=$(LAB_IP); [ "$$host" = 0.0.0.0 ] && host=127.0.0.1; \
	root=; [ "$$(id -u)" = 0 ] && root=--allow-root; \
	echo ""; echo "  JupyterLab: open http://$$host:$(LAB_PORT)/lab?token=$$token   (Ctrl-C to stop)"; echo ""; \
	exec $(VENV)/bin/jupyter lab --no-browser $$root --ServerApp.ip=$(LAB_IP) --ServerApp.port=$(LAB_PORT) \
	  --ServerApp.port_retries=0 --IdentityProvider.token=$$token --ServerApp.root_dir=notebooks

reproduce: $(STAMP)  ## regenerate every number of Tables 1-2 and results/FINDINGS.md (40 runs, about 1 h 40 min on 2 cores: two single-threaded shards; resumable)
	$(PY) -m pirid_lite reproduce --out results --prepare  # the benchmark, generated once before the shards read it
	$(PY) -m pirid_lite reproduce --out results --shard 0/2 --threads 1 & $(PY) -m pirid_lite reproduce --out results --shard 1/2 --threads 1; wait
	$(PY) -m pirid_lite reproduce --out results

benchmarks: $(STAMP)  ## run every benchmark at full size, print ratios
	$(PY) -m benchmarks.run_all

gpu-check:  ## the prepared GPU check of docs/GPU.md (machine's own python3, no .venv) -> results/gpu/ (GPU_CHECK_OUT=DIR)
	PYTHONPATH=. python3 -m benchmarks.gpu_check --out $${GPU_CHECK_OUT:-results/gpu}

clean:  ## remove the environment and generated data (keeps results/)
	rm -rf $(VENV) $(TOOLS) data/synthetic
