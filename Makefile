# Set-up, demo and tests. Every target creates the virtual environment in .venv on first use.
#
#   make demo   audit real held-out digit images with the bundled model; prints where the reports are
#   make test   ruff check, ruff format --check, and the test suite (slow tests excluded)

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out
DEMO_IMAGES := models/builtin/samples/digits_cnn_3_0649.png \
	models/builtin/samples/digits_cnn_7_1496.png \
	models/builtin/samples/digits_cnn_8_0513.png \
	models/builtin/samples/digits_cnn_2_0307.png

.PHONY: setup demo test test-slow lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# pip finds these wheels in the machine's local wheel cache; uv and poetry do not look there
	# and would download them. The x86_64 wheel is a CUDA build: .venv takes about 6 GB.
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[engine,service,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/fragility audit $(DEMO_IMAGES) --model builtin:digits_cnn --out $(DEMO_OUT)
	@echo "Open $(DEMO_OUT)/<image>/comparison.png to see what moved; report.json has the numbers."

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
