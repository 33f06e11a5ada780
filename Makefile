# Retort: `make demo` serves the dashboard, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_PORT ?= 8000
# The dashboard's own database and the broker the test suite uses (see DEVELOPERS.md).
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/retort
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15

.PHONY: demo test bench lint format services clean screenshots

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

demo: $(VENV)/.runtime
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	@mkdir -p var
	@$(VENV)/bin/celery -A dashboard worker -B --loglevel=INFO --concurrency=2 \
		--schedule var/celerybeat-schedule > var/worker.log 2>&1 & \
	worker=$$!; trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	echo ""; \
	echo "  Retort is at http://127.0.0.1:$(DEMO_PORT)/  (Celery worker log: var/worker.log)"; \
	echo "  Logins (password retort-demo): viewer, developer, release, release2, admin"; \
	echo ""; \
	$(PY) manage.py runserver 127.0.0.1:$(DEMO_PORT) --noreload

services:
	bash .ci/services

test: $(VENV)/.dev services
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) \
		$(PY) -m pytest $(PYTEST_ARGS)

# the README's screenshots, taken again by the browser tests that walk those pages
screenshots: $(VENV)/.dev services
	RETORT_UPDATE_SCREENSHOTS=1 DATABASE_URL=$(TEST_DATABASE_URL) \
		CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) -m pytest -m browser $(PYTEST_ARGS)

bench: $(VENV)/.dev services
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m bench

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf var test-artifacts .pytest_cache
