# One front door: every target sets up .venv first; CI calls `make test` too.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
CONFIG  ?= configs/default.yaml
STAMP   := $(VENV)/.installed

.PHONY: setup lint test test-slow demo data preview train extract transfer add-target add-source ahp taxonomy report upgrade published compare science significance stability novel estimate bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# ruff with the rules in pyproject.toml; `make test` runs it first
lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

RUN     ?= runs/$(basename $(notdir $(CONFIG)))

# The main job: the contact sheet, then every stage (each skipped when up to date) on the default config.
demo: preview
	$(BIN)/taskonomy --config $(CONFIG) run

data: setup
	$(BIN)/taskonomy --config $(CONFIG) data

preview: setup
	$(BIN)/taskonomy --config $(CONFIG) data --preview $(RUN)/contact_sheet.png

train: data
	$(BIN)/taskonomy --config $(CONFIG) train

extract: train
	$(BIN)/taskonomy --config $(CONFIG) extract

# Stage II: readouts from the cached features to every target -> transfers.zarr
transfer: extract
	$(BIN)/taskonomy --config $(CONFIG) transfer

# Reuse the cache of a finished run (the run folder's own config.yaml applies):
#   make add-target NAME=far_room LABELS=far_room.npy LOSS=bce
#   make add-source NAME=vp_normal ENCODER=normal_encoder-f5e2c773.pth
#   make add-source NAME=r50 KIND=export FILE=resnet50_layer3.pt2     (any kind of extract/encoders.py)
add-target: setup
	$(BIN)/taskonomy --run-dir $(RUN) add-target $(NAME) --labels $(LABELS) --loss $(LOSS)

add-source: setup
	$(BIN)/taskonomy --run-dir $(RUN) add-source $(NAME) $(if $(KIND),--kind $(KIND) --file $(FILE),--encoder $(ENCODER))

# Stage III over the run's transfers.zarr (written by stage II).
ahp: setup
	$(BIN)/taskonomy --config $(CONFIG) ahp

# Stage IV over the run's affinity.csv (stage III) and transfers.zarr (stage II).
taxonomy: setup
	$(BIN)/taskonomy --config $(CONFIG) solve
	$(BIN)/taskonomy --config $(CONFIG) evaluate

# The static HTML page of the run folder (needs affinity.csv; shows whatever else the stages wrote).
report: setup
	$(BIN)/taskonomy --config $(CONFIG) report

# The original release's published affinities and win rates as a run folder (IMAGES=1k|16k|all), solved at
# budget 4, max order 2; then `make compare`: the run's agreement with them (compare.csv/json/png in $(RUN)).
IMAGES    ?= 16k
PUBLISHED ?= runs/published_$(IMAGES)
published: setup
	$(BIN)/taskonomy --run-dir $(PUBLISHED) published --images $(IMAGES)
	$(BIN)/taskonomy --run-dir $(PUBLISHED) solve --budget 4 --max-order 2

compare: setup
	$(BIN)/taskonomy compare $(RUN) published:$(IMAGES)

# The issue's science goals measured on the finished run (science.csv/json in $(RUN)); exit 0 whether they pass.
science: setup
	$(BIN)/taskonomy --run-dir $(RUN) science

# Is the taxonomy better than chance? Against 1,000 random feasible policies per budget and max order
# (significance.csv/png in $(RUN)); and how stable it is over bootstrap resamples of the test images and, with
# READOUT_SEEDS=1 (a comma list), over stage II trained again under other readout seeds (stability.csv/json).
POLICIES ?= 1000
READOUT_SEEDS ?=
significance: setup
	$(BIN)/taskonomy --run-dir $(RUN) significance --policies $(POLICIES)

stability: setup
	$(BIN)/taskonomy --run-dir $(RUN) stability $(if $(READOUT_SEEDS),--readout-seeds $(READOUT_SEEDS))

# Each task left out in turn and reached by all-for-one from the others' taxonomy (novel.csv/png in $(RUN)).
novel: setup
	$(BIN)/taskonomy --run-dir $(RUN) novel

# Readout-free transferability estimators on the run's feature cache (estimates/<name>.csv, higher = better) and,
# where the run has affinity.csv, their agreement with AHP (estimate_agreement.csv/json/png in $(RUN)).
ESTIMATORS ?= logme,hscore,rsa,parc,ridge
estimate: setup
	$(BIN)/taskonomy --run-dir $(RUN) estimate --estimators $(ESTIMATORS)

# A run folder made by an older version: verify its stores and record what this version needs.
upgrade: setup
	$(BIN)/taskonomy --run-dir $(RUN) upgrade

bench: setup
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_import.py
	$(BIN)/python benchmarks/bench_extract.py
	$(BIN)/python benchmarks/bench_transfer.py
	$(BIN)/python benchmarks/bench_workers.py
	$(BIN)/python benchmarks/bench_cluster.py
	$(BIN)/python benchmarks/bench_encoder.py
	$(BIN)/python benchmarks/bench_bip.py
	$(BIN)/python benchmarks/bench_ahp.py
	$(BIN)/python benchmarks/bench_estimate.py --run-dir $(RUN)

clean:
	rm -rf runs/
