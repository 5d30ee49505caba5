# normbook: `make test` and `make book` each set up .venv on a fresh machine first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: book test check-book bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book is built: open $(CURDIR)/_build/html/index.html"

test: $(STAMP)
	$(BIN)/python -m pytest

check-book: $(STAMP)   # after make book: every page in headless Chromium
	$(BIN)/python -m pytest -o addopts="-p no:cacheprovider" tests/check_book_in_browser.py

bench: $(STAMP)
	$(BIN)/python tests/bench_norms.py
	$(BIN)/python tests/bench_train.py
	$(BIN)/python tests/bench_book.py

clean:
	rm -rf _build .pytest_cache
