# The README's two commands: `make run` and `make test`. Everything else is what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
UV_VERSION := 0.13.9
PYTEST := $(BIN)/python -m pytest -p tests.services_plugin

.PHONY: run test install lint typecheck pytest pytest-embedded lock bench clean browser-deps

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: Python 3.11 or newer is needed (found $$($(PYTHON) --version 2>&1)); set PYTHON=..."; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || \
	  { echo "error: the Python venv module is missing: install the Debian package python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Installs exactly the versions in requirements.lock (compiled by uv from pyproject.toml).
$(VENV)/.installed: requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	@touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py demo_city
	@echo ""
	@echo "Open http://127.0.0.1:$(PORT)/login/  (health: http://127.0.0.1:$(PORT)/healthz)"
	$(BIN)/daphne -b 127.0.0.1 -p $(PORT) config.asgi:application

test: install browser-deps lint typecheck pytest pytest-embedded

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy .

# The whole suite on PostgreSQL + Redis (found or started by tests/services_plugin.py), in
# TEST_WORKERS parallel processes (pytest-xdist; each has its own test database and Redis names).
TEST_WORKERS ?= 2
pytest: install
	$(PYTEST) -n $(TEST_WORKERS)

# The embedded default (SQLite + in-memory channel layer) keeps working too.
pytest-embedded: install
	YJLD_TEST_EMBEDDED=1 $(PYTEST) -n $(TEST_WORKERS) -m embedded

# Re-pin after editing pyproject.toml.
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

bench: install
	$(BIN)/python -m bench.geocode

clean:
	rm -rf $(VENV) var

# Debian's Chromium for the browser tests (tests/browser/, Playwright with executable_path), plus a
# small CJK font so the screenshots in docs/ show Chinese text; `playwright install` is never used.
browser-deps:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="chromium"; \
	fc-list :lang=zh 2>/dev/null | grep -q . || missing="$$missing fonts-wqy-microhei"; \
	if [ -z "$$missing" ]; then echo "browser-deps: chromium and a CJK font are installed"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "browser-deps: installing$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
	  echo "error: the browser tests need the Debian package(s):$$missing (run: sudo apt-get install$$missing)"; \
	  exit 1; \
	fi
