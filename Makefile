# One command sets up and runs the demo, one sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench-smoke throughput clean

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

clean:
	rm -rf $(VENV) build *.egg-info
