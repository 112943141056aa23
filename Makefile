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

OIDC := tests/oidc

.PHONY: run test install lint oidc

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# setuptools' "Editable installation … folders in your working directory with the same name as
# your package may take precedence" notice describes exactly how this app runs (from its own
# folder): that one message is dropped, every other warning still shows.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	SD_MODEL="$(SD_MODEL)" $(BIN)/streamlit run streamlit_app.py --server.address $(HOST) --server.port $(PORT)

# The sign-in browser test's OpenID Connect provider (npm oidc-provider, pinned by its lock),
# installed again only when the lock changes. Without npm that test is skipped, saying why.
$(OIDC)/node_modules/.package-lock.json: $(OIDC)/package-lock.json
	cd $(OIDC) && npm ci --no-audit --no-fund

oidc:
	@if command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(OIDC)/node_modules/.package-lock.json; \
	else echo "npm not found: tests/test_e2e_signin.py will be skipped"; fi

# Test files run in parallel (pytest-xdist): most of the suite waits on servers, browsers and
# subprocesses, so three workers keep two cores busy. `make test TEST_WORKERS=0` runs serially.
TEST_WORKERS ?= 3

test: install oidc
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
