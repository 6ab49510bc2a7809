# One command sets up and runs the demo, one sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench-smoke throughput gpu-check gpu-wheels clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,bench,hf,serve]'
	touch $(STAMP)

setup: $(STAMP)

EXAMPLES := awt/data/examples
DEMO := $(BIN)/awt classify $(EXAMPLES) --classes $(EXAMPLES)/classes.txt --descriptions $(EXAMPLES)/descriptions.json

# Full AWT on the packaged photos with their hand-written descriptions (no LLM needed). Without the
# default weights on disk and without a way to download them, the same run on random weights.
demo: $(STAMP)
	@if $(BIN)/python -c "from awt import defaults; from awt.backbone_open_clip import check_weights_available as c; \
	    c(defaults.MODEL, defaults.PRETRAINED, None)" 2>/dev/null; then \
	    $(DEMO); \
	else \
	    echo "demo: the default weights (ViT-B-32, openai) are not on disk and cannot be downloaded here;" \
	         "running on random weights instead: the pipeline is real, the predictions mean nothing" >&2; \
	    $(DEMO) --pretrained none; \
	fi

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)   # the unit and integration layers without the slow tests: about a minute
	$(BIN)/python -m pytest -q -m "not slow and not e2e and not gpu"

bench-smoke: $(STAMP)
	$(BIN)/awt bench benchmarks/configs/smoke.yaml --output runs/smoke

throughput: $(STAMP)
	$(BIN)/python benchmarks/throughput.py --device cpu --model ViT-B-32 --pretrained none --classes 100 --images 4

# The GPU check (benchmarks/README.md, "GPU check"): at most 8 minutes, install included, one JSON
# file. With wheels in .whl/ (a machine without PyPI; `make gpu-wheels` here first) they are
# installed for $(PYTHON), which must hold torch; else the .venv is made from constraints.txt.
# Without CUDA it says so in one line and installs nothing.
GPU_CHECK_JSON ?= runs/gpu-check/gpu_check.json
GPU_CHECK_ARGS ?=
# what the lent GPU machines' image (Python 3.12, torch preinstalled) lacks for the check
GPU_WHEELS ?= open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 numba==0.68.1 llvmlite==0.50.0
GPU_PYTHON_VERSION ?= 3.12

gpu-check:
	@start=$$(date +%s); \
	if ls .whl/*.whl >/dev/null 2>&1; then \
		$(PYTHON) benchmarks/gpu_check.py --wheels .whl --started-at $$start --json $(GPU_CHECK_JSON) $(GPU_CHECK_ARGS); \
	elif $(PYTHON) benchmarks/gpu_check.py --probe; then \
		$(MAKE) --no-print-directory setup && \
		$(BIN)/python benchmarks/gpu_check.py --started-at $$start --json $(GPU_CHECK_JSON) $(GPU_CHECK_ARGS); \
	fi

gpu-wheels:
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) build *.egg-info
