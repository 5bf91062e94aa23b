#!/usr/bin/env bash
# Reproduce the shipped motion-only model (model/weights/ped2_motion.pt, the default before the two-stream model)
# and its figures on UCSD Ped2.
# Usage: bench/ped2_motion_reproduce.sh [PED2_ROOT] [WORK_DIR]   (run from the repository root; CPU is enough)
# Steps: extract motion features -> choose the config by cross-validation over the TRAINING clips ->
# train 5 seeds on all training clips and evaluate on the test split -> ablation ladder with the same rule ->
# ship seed 42 (named in advance) -> evaluate the shipped model with `refinevad evaluate`.
set -euo pipefail

PED2_ROOT=${1:-../shared/data/ped2}
WORK=${2:-/tmp/ped2-reproduce}
PY=${PYTHON:-.venv/bin/python}
SEEDS=42,43,44,45,46
CONFIGS=(ped2_paper ped2_default)

"$PY" -m cli.main extract --dataset ped2 --root "$PED2_ROOT" --out "$WORK/features" --backbone motion --no-progress

# Config selection: 3-fold CV over the 18 training clips, video-level labels only (never the test split).
for config in "${CONFIGS[@]}"; do
    "$PY" bench/ped2_train.py cv --config "model/weights/$config.json" \
        --train-features "$WORK/features/train" --out "$WORK/cv/$config" --seeds "$SEEDS"
done

# Test figures of the chosen config (and of the paper defaults, for reference), 5 seeds each.
for config in "${CONFIGS[@]}"; do
    "$PY" bench/ped2_train.py test --config "model/weights/$config.json" \
        --train-features "$WORK/features/train" --test-features "$WORK/features/test" --root "$PED2_ROOT" \
        --out "$WORK/test/$config" --seeds "$SEEDS"
done

# The spec's ablation ladder on top of the chosen config (same seeds, same checkpoint rule).
"$PY" bench/ped2_train.py ablate --config model/weights/ped2_default.json --variants ladder \
    --train-features "$WORK/features/train" --test-features "$WORK/features/test" --root "$PED2_ROOT" \
    --out "$WORK/ablation" --seeds "$SEEDS"

"$PY" bench/ped2_train.py ship --report "$WORK/test/ped2_default/report.json" --seed 42 \
    --to model/weights/ped2_motion.pt

# The shipped default model through the project's own evaluation command.
"$PY" -m cli.main evaluate --dataset ped2 --root "$PED2_ROOT" --split test --checkpoint ped2_motion --json
