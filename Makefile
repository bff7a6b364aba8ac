# Fresh machine: only Python 3.11 + pip are needed; uv is bootstrapped with pip when missing.
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --frozen

.PHONY: install audit test test-slow test-all bench schema clean

install:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen

audit: install
	$(RUN) secsuite audit $(CONFIG)

# One thread per process: the tests use tiny models, and OpenMP threads spin and stall on a busy 2-core machine.
test: install
	OMP_NUM_THREADS=1 $(RUN) python -m pytest

# The slow tests alone (CI runs them after `make test`).
test-slow: install
	OMP_NUM_THREADS=1 $(RUN) python -m pytest -m slow

test-all: install
	OMP_NUM_THREADS=1 $(RUN) python -m pytest -m "slow or not slow"

bench: install
	$(RUN) python bench/attacks.py
	@for script in bench/defenses.py bench/certified.py bench/mpc.py bench/backdoor.py bench/privacy.py; do \
		if [ -f $$script ]; then $(RUN) python $$script || exit 1; fi; done

schema: install
	$(RUN) python -c "import json, secsuite.report as r; open('docs/report.schema.json', 'w').write(json.dumps(r.json_schema(), indent=2) + '\n')"

clean:
	rm -rf secsuite-report .pytest_cache .hypothesis
