# Every target uses the project's own virtualenv, whatever the environment
# says: `:=` cannot be overridden by an exported VENV or PY.
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
PYTHON3 := $(shell command -v python3)
STAMP := $(VENV)/.installed-stamp
# `make bench` adds the bench extra (rq, matplotlib) with a stamp of its own,
# so that `make run` and `make test` never install them
BENCH_STAMP := $(VENV)/.bench-stamp
# marshmallow 3 for `make test-mm3` (below), its own stamp
MM3 := $(VENV)/mm3
MM3_OLDEST := $(VENV)/mm3-oldest
MM3_STAMP := $(VENV)/.mm3-stamp

.PHONY: run test test-mm3 bench soak lint docs screenshots clean

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev,docs,browser]'
	touch $(STAMP)

## make run: the example service on http://127.0.0.1:8888 with a worker;
## make run PORT=9000 for another port (`:=`: a PORT exported in the
## environment does not change it, one on make's command line does)
PORT := 8888
run: $(STAMP)
	$(PY) -m flask --app examples.app spacewalk serve --bind 127.0.0.1:$(PORT) \
		--web-workers 2 --processes 1

## make test: the whole suite, and beside it what marshmallow 3 can change
## (the newest 3.x and the oldest supported, 3.18)
# The main run waits on the processes it starts (gunicorn, workers, servers)
# more than it computes: with two processes per core it uses 1.3 of 2 cores,
# and the two marshmallow 3 runs fill the rest. Their output is printed after
# the main run's; the target fails if any of the three fails.
# (loadgroup: the console's browser tests share one server and one browser)
test: $(STAMP) $(MM3_STAMP)
	$(MAKE) --no-print-directory test-mm3 > $(VENV)/test-mm3.log 2>&1 & mm3=$$!; \
	$(PY) -m pytest -n 4 --dist loadgroup; main=$$?; \
	wait $$mm3; mm3_status=$$?; \
	echo "== marshmallow 3 runs (make test-mm3) =="; cat $(VENV)/test-mm3.log; \
	test $$main -eq 0 && test $$mm3_status -eq 0

# marshmallow shapes the schemas, the documents and the API, not the backends
MM3_TESTS := tests/test_post_schema.py tests/test_runtime_job.py tests/test_views.py \
	tests/test_extension.py tests/test_zerog_compat.py tests/test_discovery.py \
	tests/test_openapi.py
# Each marshmallow 3 is a directory put first on PYTHONPATH, shadowing the
# project's marshmallow 4 (and, for 3.18, marshmallow-jsonschema) and nothing
# else: two small wheels instead of two tox environments installed from scratch
# (78 s of CI's 5 min 32 s). SPACEWALK_TEST_MARSHMALLOW makes tests/conftest.py
# fail the run if another marshmallow is imported. `tox -e mm3,mm3-oldest`
# still builds the full environments.
$(MM3_STAMP): $(STAMP)
	rm -rf $(MM3) $(MM3_OLDEST)
	$(PY) -m pip install --quiet --no-deps --target $(MM3) 'marshmallow>=3.18,<4'
	$(PY) -m pip install --quiet --no-deps --target $(MM3_OLDEST) \
		'marshmallow==3.18.0' 'marshmallow-jsonschema==0.16.0'
	touch $(MM3_STAMP)

# both at once, one pytest process each
test-mm3: $(MM3_STAMP)
	PYTHONPATH=$(MM3) SPACEWALK_TEST_MARSHMALLOW=3 $(PY) -m pytest -q $(MM3_TESTS) & \
	mm3=$$!; \
	PYTHONPATH=$(MM3_OLDEST) SPACEWALK_TEST_MARSHMALLOW=3.18.0 $(PY) -m pytest -q $(MM3_TESTS); \
	oldest=$$?; wait $$mm3 && exit $$oldest

$(BENCH_STAMP): $(STAMP) setup.py
	$(PY) -m pip install --quiet -e '.[test,dev,docs,browser,bench]'
	touch $(BENCH_STAMP)

## make bench: the suite of benchmarks/README.md (needs wrk, beanstalkd, PostgreSQL and
## Redis on loopback); writes its results into docs/performance.rst, benchmarks/results.md
## and docs/_static/bench.png, then the job listing, purge, metrics scrape and
## Prefer: wait benchmarks.
## Missed targets are reported at the end, and do not fail the target.
bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.run
	$(PY) benchmarks/listing_bench.py
	$(PY) benchmarks/purge_bench.py
	$(PY) benchmarks/metrics_bench.py
	$(PY) benchmarks/wait_bench.py

## make docs: the HTML documentation in docs/_build/html (warnings are errors)
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

## make screenshots: the console's browser tests, saving the pictures of
## docs/console.rst into docs/_static
screenshots: $(STAMP)
	SPACEWALK_CONSOLE_SCREENSHOTS=$(CURDIR)/docs/_static $(PY) -m pytest -q tests/test_console_browser.py

## make soak: the reliability checks repeated for MINUTES (default 10), then a summary
MINUTES ?= 10
soak: $(STAMP)
	$(PY) benchmarks/soak.py --minutes $(MINUTES)

lint: $(STAMP)
	$(PY) -m ruff check flask_spacewalk tests examples benchmarks
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .tox build *.egg-info instance examples/instance docs/_build
