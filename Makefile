# Refit: one entry point for set-up, the demo and the tests.
#   make demo   - install (if needed), build the demo warehouse, run the retrain DAG twice
#   make test   - install (if needed), lint and type-check, run the whole test suite
#   make test-quick - the inner loop: lint, type-check and the tests that need no Airflow run
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REFIT_HOME ?= $(CURDIR)/.refit
export REFIT_HOME
# mlflow 3.17 renamed MLFLOW_LOGGING_CONFIGURE_LOGGING to this; false keeps Airflow's task logging intact.
export MLFLOW_CONFIGURE_LOGGING := false

STAMP := $(VENV)/.installed
# Debian packages the tests drive: headless Chromium for the Airflow UI view; the Docker Engine
# (docker.io: dockerd), docker-compose (v1) and debootstrap for the compose stack test, which
# builds every image here from a Debian base (tests/stack, docker/local/build.sh). Compose v2, which
# bookworm lacks, comes from trixie's archive into .tools/ for the compose file's offline check
# (docker/local/compose-v2.sh; verified with Debian's archive keys, nothing installed system-wide).
SYSTEM_PACKAGES := chromium chromium-driver docker.io docker-compose debootstrap curl gpgv debian-archive-keyring xz-utils

.PHONY: setup system-deps demo lint typecheck test test-quick test-stack real-services gpu-wheels lock clean

setup: $(STAMP)

# Installs only what is missing; needs root (CI and these machines run as root) or sudo.
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing Debian packages: $$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	docker/local/compose-v2.sh

# The lock is used as a constraints file: a fresh machine gets exactly the resolved set.
$(STAMP): requirements.txt requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -c requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

demo: setup
	PYTHONPATH=plugins $(BIN)/python -m refit_airflow.demo

# Every Python file (ml_tasks, dags, plugins, tests, bench): pyflakes, pycodestyle, import order,
# bugbear, naming, pyupgrade (pyproject.toml's [tool.ruff]).
lint: setup
	$(BIN)/ruff check .

# ml_tasks, strict in core/, evaluation/, gating/ and registry/ (pyproject.toml's [tool.mypy]).
typecheck: setup
	$(BIN)/mypy

# Parts, each timed (tests/parts.py): unit, end-to-end (the real DAGs on local processes) and the
# compose stack on a real Docker Engine, whose images build in the background while the other
# parts run. PYTEST_ARGS goes to each part (e.g. PYTEST_ARGS=-x); TEST_PARTS picks parts
# (e.g. TEST_PARTS='unit e2e' where no Docker Engine may run).
TEST_PARTS ?= unit e2e stack
export PYTEST_ARGS
test: setup system-deps lint typecheck
	$(BIN)/python -m tests.parts $(TEST_PARTS)

# Minutes, not tens of them: no end-to-end DAG runs, no real-services or compose stack. It
# needs system-deps too: the unit part checks docker-compose and Compose v2 read the stack's file.
test-quick: setup system-deps lint typecheck
	$(BIN)/python -m tests.parts unit

# The compose stack alone: images built here (docker/local/build.sh), docker-compose up, the DAG
# launching trainer containers through the socket proxy, and faults on the running stack.
test-stack: setup system-deps
	$(BIN)/python -m tests.parts stack

# The deployed-mode run on local processes: MLflow server, moto S3, Airflow api-server,
# scheduler and dag-processor on PostgreSQL; the DAG triggered through the REST API.
real-services: setup
	$(BIN)/python -m pytest tests/e2e/test_real_services.py -v $(PYTEST_ARGS)

# Wheels the GPU machine lacks (its Python 3.12 image has torch, numpy, pandas, scikit-learn and
# pytest, not pydantic or SQLAlchemy), pinned to the lock, for bench/gpu_check.sh: carry .whl with it.
GPU_WHEELS := pydantic pydantic-core annotated-types typing-inspection typing-extensions sqlalchemy
gpu-wheels: setup
	rm -rf .whl && mkdir -p .whl
	for p in $(GPU_WHEELS); do \
	  v=$$(grep -iE "^$$(echo $$p | sed 's/[-_]/[-_]/g')==" requirements.lock | cut -d= -f3); \
	  $(BIN)/pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
	    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	    --platform manylinux2014_x86_64 -d .whl "$$p==$$v" || exit 1; \
	done

# Re-resolve the lock from requirements.txt in a scratch venv.
lock:
	rm -rf /tmp/refit-lock && $(PYTHON) -m venv /tmp/refit-lock
	/tmp/refit-lock/bin/pip install --quiet -r requirements.txt
	{ echo "# Full resolved dependency set for Python 3.11 (pip freeze of requirements.txt)."; \
	  echo "# Regenerate with: make lock"; \
	  /tmp/refit-lock/bin/pip freeze | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/'; } > requirements.lock

clean:
	rm -rf $(REFIT_HOME)
