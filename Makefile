# One command sets up and runs the demo, one sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench-smoke throughput gpu-check gpu-wheels clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,bench,hf]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/awt classify awt/data/examples --classes awt/data/examples/classes.txt

test: $(STAMP)
	$(BIN)/python -m pytest -q

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
GPU_WHEELS ?= open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
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
