# Two commands a newcomer needs: `make run` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run` uses the offline demo model unless SD_MODEL is given, e.g.
# `make run SD_MODEL=stabilityai/stable-diffusion-3.5-medium`.
SD_MODEL ?= demo
PORT ?= 8501
# Loopback only by default, like A1111 and ComfyUI: `make run HOST=0.0.0.0` opens the app to
# the network (set up sign-in first: README, "Sharing it with a team"). On the command line,
# not in .streamlit/config.toml: Community Cloud sets the address itself.
HOST ?= 127.0.0.1

.PHONY: run test install lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	SD_MODEL="$(SD_MODEL)" $(BIN)/streamlit run streamlit_app.py --server.address $(HOST) --server.port $(PORT)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
