# adwatch: `make run` runs the whole pipeline locally; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bootstrapped
PACKAGES := pyproject.toml uv.lock $(wildcard libs/*/pyproject.toml services/*/pyproject.toml) scripts/bootstrap.sh

# Spark workers must use the venv's python; everything listens on loopback.
export PYSPARK_PYTHON        := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)
export SPARK_LOCAL_IP        := 127.0.0.1

.PHONY: run test lint mypy format bench query schemas docs dashboards chart-examples images containers clean

$(STAMP): $(PACKAGES)
	PYTHON=$(PYTHON) VENV=$(VENV) ./scripts/bootstrap.sh
	touch $@

run: $(STAMP)  ## the whole pipeline on embedded defaults (SCENARIO=none for a clean run)
	$(BIN)/adwatch run

test: $(STAMP) lint containers  ## lint, then every test (unit, Spark, services, end-to-end, images)
	@command -v chromium >/dev/null 2>&1 || ./scripts/install_chromium.sh  # the report's browser test
	$(BIN)/pytest

containers:  ## install Docker's engine, runc and debootstrap when missing (image tests skip without them)
	./scripts/install-containers.sh

images: $(STAMP) containers  ## build adwatch-{generator,detector,notifier}:dev (BASE_IMAGE=... for another base)
	./scripts/images.sh build

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory mypy
	$(BIN)/lint-imports

RUNTIME_SRC := libs/adwatch/src services/generator/src services/detector/src services/notifier/src
mypy: $(STAMP)  ## strict on the runtime packages, standard on the development kit
	$(BIN)/mypy --strict $(RUNTIME_SRC)
	$(BIN)/mypy libs/adwatch-dev/src

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)  ## benchmarks; results go to BENCHMARKS.md by hand, with machine and command
	$(BIN)/python benchmarks/bench_generator.py
	$(BIN)/python benchmarks/bench_detection.py
	$(BIN)/python benchmarks/bench_detector_spark.py --events 1500000
	$(BIN)/python benchmarks/bench_notifier.py
	$(BIN)/python benchmarks/bench_channels.py
	$(BIN)/python benchmarks/bench_history.py
	$(BIN)/python benchmarks/quality.py --days 7
	$(BIN)/python benchmarks/bench_segments.py
	$(BIN)/python benchmarks/nab.py --data ../shared/nab/data --labels ../shared/nab/labels/combined_windows.json
	$(BIN)/python benchmarks/bench_latency.py --minutes 7

query: $(STAMP)  ## make query SQL='SELECT * FROM ad_alerts'
	$(BIN)/adwatch query "$(SQL)"

schemas: $(STAMP)  ## regenerate schemas/*.json from the contracts
	$(BIN)/adwatch schemas schemas

docs: $(STAMP)  ## regenerate the README settings table and docs/metrics.md
	$(BIN)/python scripts/gen_docs.py

dashboards: $(STAMP)  ## regenerate dashboards/adwatch-segment.json (dashboards as code; commit the result)
	$(BIN)/python scripts/gen_dashboards.py

chart-examples: $(STAMP)  ## re-render charts/adwatch/examples/*/rendered (commit the result)
	$(BIN)/python tests/deploy/chart.py --write

clean:
	-./scripts/docker-daemon.sh stop
	rm -rf .adwatch $(VENV)
