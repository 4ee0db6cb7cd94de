# The two commands of the README. Both set up what is missing (idempotent, fast when done).
.PHONY: setup demo test lint
VENV := .venv

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/hydranet demo $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest $(ARGS)

lint: setup
	$(VENV)/bin/ruff check napari_hydranet tests benchmarks
