#!/usr/bin/env bash
# Reproduce the shipped default model (model/weights/default.pt: RefineVAD on two-stream EfficientNet-Lite0 +
# motion features of UCSD Ped2) and every figure of its model card.
# Usage: bench/ped2_reproduce.sh [PED2_ROOT] [WORK_DIR]   (run from the repository root; CPU is enough)
# Steps: extract two-stream features for each appearance candidate (layer x spatial pooling) -> choose by
# 3-fold cross-validation over the TRAINING clips (video-level labels only) -> train 5 seeds on all training
# clips and evaluate on the test split -> ablation ladder with the same rule -> ship seed 42 (named in advance)
# -> evaluate the shipped model with `refinevad evaluate` -> offline-vs-live AUC on the test split.
set -euo pipefail

PED2_ROOT=${1:-../shared/data/ped2}
WORK=${2:-/tmp/ped2-two-stream}
PY=${PYTHON:-.venv/bin/python}
SEEDS=42,43,44,45,46
CV_SEEDS=42,43,44
CONFIG=model/weights/ped2_two_stream.json
CHOSEN=blocks_max # the CV winner (video AUC) among the shippable candidates (see the model card)

# Candidates: the 1280-channel head map and the 320-channel last-stage map, each pooled three ways. (grid2, a
# 2x2 grid of averages, makes 5120 + 336 = 5456-dim features: a head of several hundred MB, not a candidate.)
for layer in head blocks; do
    for pooling in avg max gem; do
        "$PY" -m cli.main extract --dataset ped2 --root "$PED2_ROOT" --out "$WORK/features/${layer}_$pooling" \
            --backbone two_stream --appearance-layer "$layer" --appearance-pooling "$pooling" --no-progress
        "$PY" bench/ped2_train.py cv --config "$CONFIG" --train-features "$WORK/features/${layer}_$pooling/train" \
            --out "$WORK/cv/${layer}_$pooling" --seeds "$CV_SEEDS"
    done
done

# The spec's ablation ladder on the chosen features; its `full` row is the shipped configuration.
"$PY" bench/ped2_train.py ablate --config "$CONFIG" --variants ladder \
    --train-features "$WORK/features/$CHOSEN/train" --test-features "$WORK/features/$CHOSEN/test" \
    --root "$PED2_ROOT" --out "$WORK/ablation" --seeds "$SEEDS"

"$PY" bench/ped2_train.py ship --report "$WORK/ablation/full/report.json" --seed 42 --half-weights \
    --to model/weights/default.pt

# The shipped default model through the project's own evaluation command, then live vs offline.
"$PY" -m cli.main evaluate --dataset ped2 --root "$PED2_ROOT" --split test --json
"$PY" -m bench.live_streams --parts auc
