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

bench-smoke: $(STAMP)
	$(BIN)/awt bench benchmarks/configs/smoke.yaml --output runs/smoke

throughput: $(STAMP)
	$(BIN)/python benchmarks/throughput.py --device cpu --model ViT-B-32 --pretrained none --classes 100 --images 4

clean:
	rm -rf $(VENV) build *.egg-info
