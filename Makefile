# `make demo` and `make test` do everything on a fresh clone: venv, install, run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-profile lint docs notebooks bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev,docs]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedsim run

lint: $(STAMP)
	$(BIN)/ruff check fedsim attackers strategies tests benchmarks research examples/notebooks docs/hooks
	$(BIN)/lint-imports
	$(BIN)/mypy

# The documentation site (mkdocs, material): warnings and broken links are errors.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict -d site

# The notebooks of examples/notebooks, converted (jupytext) and executed headless (nbclient) into build/notebooks.
notebooks: $(STAMP)
	$(BIN)/python examples/notebooks/execute.py build/notebooks

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The determinism tests again on a second machine profile: ATen's portable kernels instead of the
# CPU's widest vector instructions, and one OpenMP thread. Bytes must still be equal within the
# profile, and the short run's models within tolerance of reference values taken on another CPU.
test-profile: $(STAMP)
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 $(BIN)/python -c "import torch; print('torch CPU capability:', torch.backends.cpu.get_cpu_capability())"
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m determinism

bench: $(STAMP)
	$(BIN)/python benchmarks/features.py
	$(BIN)/python benchmarks/simulation.py
	$(BIN)/python benchmarks/recorder.py
	$(BIN)/python benchmarks/attack_training.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/suite.py
# scale.py: both engines by default (about 21 min on 2 shared cores; the Ray points are two thirds of it): --engines in-process for the in-process points alone
	$(BIN)/python benchmarks/scale.py --engines in-process,ray
	$(BIN)/python benchmarks/reconstruction.py

clean:
	rm -rf runs .pytest_cache site build/notebooks
