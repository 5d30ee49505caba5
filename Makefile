# normbook: `make test` and `make book` each set up .venv on a fresh machine first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# CI checks every claim on two draws at no extra cost: `make test` runs the
# chapters under nbval on seed base TEST_SEED with torch's portable kernels,
# `make book` executes them on base 0 (the draw the book shows) with the CPU's
# best kernels. `make robust` runs every chapter on each base of SEEDS.
TEST_SEED ?= 1
SEEDS     ?= 1 2 3 4

.PHONY: book test lint robust check-book pdf archive bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

book: $(STAMP)
	env -u ATEN_CPU_CAPABILITY NORMBOOK_SEED=0 \
	  $(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book is built: open $(CURDIR)/_build/html/index.html"

lint: $(STAMP)   # 79 columns, pyflakes, pycodestyle, isort: both packages, tests, notebooks
	$(BIN)/ruff check .

test: lint
	NORMBOOK_SEED=$(TEST_SEED) ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest

robust: $(STAMP)   # every chapter on each seed base of SEEDS; a table of failed cells
	$(BIN)/python tools/robust.py --seeds "$(SEEDS)"

check-book: $(STAMP)   # after make book: every page in headless Chromium
	$(BIN)/python -m pytest -o addopts="-p no:cacheprovider" tests/book/check_book_in_browser.py

pdf: $(STAMP)   # after make book: the whole book as one PDF (_build/html/normbook.pdf), then its checks
	$(BIN)/python tools/book_pdf.py
	$(BIN)/python -m pytest -o addopts="-p no:cacheprovider" tests/book/check_pdf.py

archive: $(STAMP)   # after make book: every chapter with normlib, the lab and the pins (_build/html/normbook.zip)
	$(BIN)/python tools/book_archive.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_norms.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_book.py

clean:
	rm -rf _build .pytest_cache
