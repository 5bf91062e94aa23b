#!/usr/bin/env bash
# Reproduce the shipped default model (model/weights/default.pt: RefineVAD on two-stream EfficientNet-Lite0 +
# motion features of UCSD Ped2) and every figure of its model card.
# Usage: bench/ped2_reproduce.sh [PED2_ROOT] [WORK_DIR]   (run from the repository root; CPU is enough)
# Every choice is made by 3-fold cross-validation over the 18 TRAINING clips with video-level labels only
# (bench/ped2_train.py cv); the test split is scored only afterwards, for the figures:
#   stage 1: raw vs standardised inputs, then the appearance layer x spatial pooling;
#   stage 2: the spec's ablation variants on the chosen features (best-epoch rule);
#   stage 3: the checkpoint rule (best epoch on held-out training clips vs the last of a fixed budget);
#   stage 4: splice augmentation and the spliced-clip criterion (model/evaluation/splice.py), 5 CV seeds, and
#            the test ladders of its two CV picks (reported in the model card);
#   stage 5: Stochastic Weight Averaging (no gain; no test ladder);
#   stage 6 and 6b: one change at a time to stage 4's final pick, then combinations of the winners; the pick's
#            test ladder passes the release gate and becomes the shipped config (model/weights/ped2_two_stream.json);
#   then the ladders of the configs before and after stage 6;
#   stage 7: the shipped config's CV with live and seed-ensemble rows; the ensemble passes and is tested over five
#            disjoint seed groups, with its own ladder; ship the ensemble of seeds 42-46 (named in advance), evaluate
#            it with `refinevad evaluate`, and the offline-vs-live AUC on the test split;
#   stage 8: a live-window consistency term in training (LossConfig.lambda_live), chosen by the seed ensemble's
#            CV splice snippet AUC through the live window (no candidate passed); 8b and 8c: start-up padding and
#            a start-up look-ahead of the live window, rescoring stage 7's fold models (neither passed);
#            8d: stage 8's grid extended (lambda_live 4 passed the CV rule, then failed the release gate on test).
set -euo pipefail

PED2_ROOT=${1:-../shared/data/ped2}
WORK=${2:-/tmp/ped2-two-stream}
PY=${PYTHON:-.venv/bin/python}
SEEDS=42,43,44,45,46
CV_SEEDS=42,43,44
CV=bench/ped2_two_stream_cv
CHOSEN=blocks_max # the stage-1 winner (see the model card)

cv() { # cv NAME CONFIG FEATURES
    "$PY" bench/ped2_train.py cv --config "$2" --train-features "$3/train" --out "$WORK/cv/$1" --seeds "$CV_SEEDS"
}

cv5() { # cv5 DIR CONFIG...: each config's CV over the 5 seeds on the chosen features, into WORK/DIR/<config name>
    local dir=$1 config
    shift
    for config in "$@"; do
        "$PY" bench/ped2_train.py cv --config "$config" --train-features "$WORK/features/$CHOSEN/train" \
            --out "$WORK/$dir/$(basename "$config" .json)" --seeds "$SEEDS"
    done
}

gate_row() { # gate_row NAME CONFIG: the release gate's full-no-gmm row as seed ensembles over 25 seeds (five
    # groups of five), then, for the record, its group 42-46 through the live window on the test split
    "$PY" bench/ped2_train.py ablate --config "$2" --variants full-no-gmm --members 5 \
        --train-features "$WORK/features/$CHOSEN/train" --test-features "$WORK/features/$CHOSEN/test" \
        --root "$PED2_ROOT" --out "$WORK/ablation_$1" --seeds "$(seq -s, 42 66)"
    "$PY" -m bench.live_streams --parts auc --checkpoint "$WORK/ablation_$1/full-no-gmm/ensemble_42-46.pt"
}

# Stage 1. Candidates: the 1280-channel head map and the 320-channel last-stage map, each pooled three ways.
# (grid2, a 2x2 grid of averages, makes 5456-dim features: a head of several hundred MB, not a candidate.)
for layer in head blocks; do
    for pooling in avg max gem; do
        "$PY" -m cli.main extract --dataset ped2 --root "$PED2_ROOT" --out "$WORK/features/${layer}_$pooling" \
            --backbone two_stream --appearance-layer "$layer" --appearance-pooling "$pooling" --no-progress
        cv "stage1_${layer}_$pooling" "$CV/stage1_features.json" "$WORK/features/${layer}_$pooling"
    done
done
cv stage1_head_gem_raw "$CV/stage1_raw.json" "$WORK/features/head_gem"

# Stages 2 and 3 on the chosen features.
for config in "$CV"/stage2_*.json "$CV"/stage3_*.json; do
    cv "$(basename "$config" .json)" "$config" "$WORK/features/$CHOSEN"
done

# Stage 4: every candidate over 5 CV seeds (the spliced-clip criterion is noisy over 3), then the test ladder of
# the stage's two picks: splicing with train()'s best-epoch rule, and splicing with the last of 60 epochs.
cv5 cv5 "$CV"/stage2_base.json "$CV"/stage2_plus_motar.json "$CV"/stage2_full-no-gmm.json "$CV"/stage4_*.json
for pick in fng_splice50 fng_splice50_last60; do
    "$PY" - "$CV/stage4_$pick.json" "$WORK/stage4_$pick.json" <<'PY'
import json, sys
pick, shipped = json.load(open(sys.argv[1])), json.load(open("bench/ped2_two_stream_cv/shipped_before_stage6.json"))
shipped["train"].update({k: pick["train"][k] for k in ("splice_prob", "epochs", "patience") if k in pick["train"]})
shipped["checkpoint"] = pick.get("checkpoint", "best")
json.dump(shipped, open(sys.argv[2], "w"), indent=1)
PY
    "$PY" bench/ped2_train.py ablate --config "$WORK/stage4_$pick.json" --variants ladder \
        --train-features "$WORK/features/$CHOSEN/train" --test-features "$WORK/features/$CHOSEN/test" \
        --root "$PED2_ROOT" --out "$WORK/ablation_stage4_$pick" --seeds "$SEEDS"
done

# Stage 5: Stochastic Weight Averaging (TrainConfig.swa_epochs) over the same 5 CV seeds; stage 4's runs above are
# its reference rows. No stage 5 test ladder: the CV pick (highest mean splice snippet AUC, ties within 0.005 to
# the lower std) was a reference row, whose ladder is already there.
cv5 cv5 "$CV"/stage5_*.json

# Stage 6 (protocol fixed before any of its runs): one change at a time to stage 4's final pick (splice 0.5, last
# of 60 epochs, full-no-gmm), 5 CV seeds. Pick: the highest mean splice snippet AUC among these and stage 4's final
# pick (ties within 0.005 to the lower std). If the pick is a stage 6 config, its test ladder is run; it is shipped
# (seed 42) only if its 5-seed test mean AUC and AnoAUC are both at least the shipped config's (89.4 / 64.9), a
# release gate against regressions, not a choice between candidates.
# Stage 6b (fixed after stage 6's CV, before any stage 6 test figure): every pair and the triple of the stage 6
# changes that raised the mean splice snippet AUC by at least 0.02 (lr 1e-3, d_proj 128, dropout 0.5). The pick
# is then made over stage 6, 6b and the reference as above.
cv5 cv5 "$CV"/stage6_*.json "$CV"/stage6b_*.json

# Stage 7 (protocol fixed before any of its runs): a seed ensemble of the shipped config. The CV of the shipped
# config is rerun with two more rows, computed from the same 5 seeds' runs: the 5-member seed ensemble (members'
# snippet scores averaged, per fold) and, for singles and ensemble, the live criteria (held-out clips and spliced
# pairs scored through the live window, W = 32, each snippet's final score as the live service computes it). The
# ensemble of seeds 42-46 is shipped instead of seed 42 alone if its CV splice snippet AUC is at least the single
# seeds' mean both offline and live. Its test figures come afterwards: five ensembles of disjoint seed groups
# (42-46, 47-51, 52-56, 57-61, 62-66), mean and std of each metric; release gate as in stage 6, against the shipped
# config's 5-seed mean (90.2 / 82.3 AUC / AnoAUC). The shipped group is 42-46, named here in advance.

# The ladder of the config shipped before stage 6 (the model card's "before stage 6" rows).
"$PY" bench/ped2_train.py ablate --config bench/ped2_two_stream_cv/shipped_before_stage6.json --variants ladder \
    --train-features "$WORK/features/$CHOSEN/train" --test-features "$WORK/features/$CHOSEN/test" \
    --root "$PED2_ROOT" --out "$WORK/ablation_before_stage6" --seeds "$SEEDS"

# The spec's ablation ladder on the test split of the shipped config with single seeds (stage 6b's CV pick, which
# passed the release gate); its `full-no-gmm` row was the shipped model before stage 7.
"$PY" bench/ped2_train.py ablate --config model/weights/ped2_two_stream.json --variants ladder \
    --train-features "$WORK/features/$CHOSEN/train" --test-features "$WORK/features/$CHOSEN/test" \
    --root "$PED2_ROOT" --out "$WORK/ablation" --seeds "$SEEDS"

# Stage 7 (protocol above): the shipped config's CV again, now with its live and seed-ensemble rows; the ensemble
# met the rule (CV splice snippet AUC 0.965 offline / 0.931 live against the single seeds' 0.906 / 0.889), so its
# ladder runs as seed ensembles over 25 seeds (five groups of five) and the group 42-46 is shipped.
"$PY" bench/ped2_train.py cv --config model/weights/ped2_two_stream.json \
    --train-features "$WORK/features/$CHOSEN/train" --out "$WORK/cv7" --seeds "$SEEDS"
"$PY" bench/ped2_train.py ablate --config model/weights/ped2_two_stream.json --variants ladder --members 5 \
    --train-features "$WORK/features/$CHOSEN/train" --test-features "$WORK/features/$CHOSEN/test" \
    --root "$PED2_ROOT" --out "$WORK/ablation_ensembles" --seeds "$(seq -s, 42 66)"
"$PY" bench/ped2_train.py ship --report "$WORK/ablation_ensembles/full-no-gmm/report.json" --seed 42 \
    --half-weights --to model/weights/default.pt

# The shipped default model through the project's own evaluation command, then live vs offline.
"$PY" -m cli.main evaluate --dataset ped2 --root "$PED2_ROOT" --split test --json
"$PY" -m bench.live_streams --parts auc

# Stage 8 (protocol fixed before any of its runs). Stage 7's live gap (1.5 AUC points on test; on the training
# clips' CV, the ensemble's splice snippet AUC 0.965 offline against 0.931 live) comes from a stream's first
# snippets, scored from windows of a few snippets where offline analysis sees the whole clip. Candidates: the
# shipped config with the live-window consistency term (model.training.live_window_consistency, no labels:
# prefix-alone scores drawn towards whole-clip scores) at lambda_live 0.5, 1 and 2; reference: stage 7's CV above
# (lambda_live 0). Same 5 CV seeds and folds. Pick: the highest seed-ensemble CV splice snippet AUC *live* among
# the reference and the candidates whose ensemble CV splice snippet AUC offline is at least the reference's minus
# 0.005; ties within 0.005 go to the smaller lambda_live. If the pick is a candidate, its test figures come
# afterwards as stage 7's: the ladder as seed ensembles over 25 seeds in five disjoint groups; it is shipped
# (group 42-46) only if its full-no-gmm row's five-group mean AUC and AnoAUC are both at least the shipped
# ensemble's (95.6 / 84.6), a release gate, not a choice between candidates; then the offline-vs-live figure.
cv5 cv8 "$CV"/stage8_*.json

# Result: no candidate kept the offline floor (ensemble splice snippet AUC 0.951 / 0.949 / 0.956 against 0.960;
# live 0.934 / 0.935 / 0.943 against the reference's 0.931), so the reference stays and no stage 8 test figure.

# Stage 8b (protocol fixed before any of its runs, after stage 8's CV: no stage 8 candidate kept the offline
# floor). Start-up padding of the live window: while a stream's window holds fewer than m snippets, the head sees
# it left-padded with copies of the stream's first snippet to m snippets (the newest snippet stays last, so the
# scores read at positions -1 and -2 are the same snippets'; model.scoring.pad_live_window). Candidates m = 4, 8
# and 12 (12: the length the head is trained at, train_snippets); reference m = 1 (no padding). Scored with
# stage 7's CV fold models (no retraining): pick the highest seed-ensemble CV splice snippet AUC live, ties within
# 0.005 to the smaller m; offline scores do not change. If the pick is a candidate it becomes the live service's
# default (settings.live_min_window), and the test split's offline-vs-live figure is measured afterwards, once.
"$PY" bench/ped2_train.py live-cv --cv "$WORK/cv7" --train-features "$WORK/features/$CHOSEN/train" \
    --min-windows 1,4,8,12 --out "$WORK/cv8b"
# Result: every m within 0.005 of no padding (ensemble live splice snippet AUC 0.9309 / 0.9299 / 0.9302 / 0.9313 for
# m = 1 / 4 / 8 / 12), so none is picked: the service does not pad, and no stage 8b test figure.

# Stage 8c (protocol fixed before any of its runs, after stage 8b's). Start-up look-ahead: a stream's first
# snippets are the ones scored from windows of only 2 or 3 snippets, and stage 8b's whole-clip live rows moved
# where its spliced ones (which start with a normal half) could not. Here, while a stream holds fewer than k
# snippets its final scores wait; when the k-th snippet arrives, the window of its first k snippets gives
# snippets 0 .. k - 2 their final scores at once, and from then on as now (position -2). k = 2 is the present
# service. Candidates k = 3, 4, 6 (final scores of the first snippets late by at most k - 2 snippets, once per
# stream). Criterion: the seed ensemble's CV weak snippet AUC live (held-out whole clips, whose first snippets are
# start-up snippets), with stage 7's fold models. Pick: the highest, ties within 0.005 to the smaller k; the
# ensemble's CV splice snippet AUC live must not fall by more than 0.005. If the pick is a candidate, it becomes
# the live service's behaviour and the test split's offline-vs-live figure is measured afterwards, once.
"$PY" bench/ped2_train.py live-cv --cv "$WORK/cv7" --train-features "$WORK/features/$CHOSEN/train" \
    --lookaheads 2,3,4,6 --out "$WORK/cv8c"
# Result: every k within 0.005 of k = 2 (ensemble weak snippet AUC live 0.9488 / 0.9500 / 0.9504 / 0.9481 for
# k = 2 / 3 / 4 / 6; offline 0.9752), so none is picked and no stage 8c test figure.

# Stage 8d (protocol fixed before any of its runs, after stages 8 to 8c): stage 8's grid extended at its edge,
# where its live rows were rising (lambda_live 4 and 8), with stage 8's rule unchanged: the highest seed-ensemble
# CV splice snippet AUC live among the reference (stage 7's CV) and these candidates whose ensemble offline splice
# snippet AUC is at least 0.960 (the reference's minus 0.005); ties within 0.005 to the smaller lambda_live. A
# pick goes through stage 8's test ladder and release gate (95.6 / 84.6) before it is shipped.
cv5 cv8 "$CV"/stage8d_*.json
# Result: lambda_live 4 passed the floor (ensemble offline splice snippet AUC 0.9610 against 0.9601) with the
# highest live row (0.946 against 0.931); lambda_live 8 did not (0.935). The pick's gate row, as seed ensembles over
# 25 seeds: AUC 93.9 +/- 1.1, AnoAUC 78.3 +/- 3.8 against the gate's 95.6 / 84.6, so it is not shipped and the rest
# of its ladder was not run. For the record, its group 42-46 through the live window on the test split too.
gate_row stage8d "$CV/stage8d_live4.json"

# Stage 9 (protocol fixed before any of its runs, after stages 8 to 8d). Both unmet goals of issue 17 (the full
# model behind the base MLP+MIL; the live gap) trace to one cause the model card names: MoTAR's Transformer sees the
# whole clip, so it spreads an anomaly over its clip (offline) and a live window, which sees only up to one snippet
# ahead, scores differently from the whole clip. Candidates: the shipped config with MoTAR's self-attention limited
# to a sliding window of w snippets each way (model.attention_window; a band mask, as Longformer's local
# attention; the paper's global attention is w = None), w = 1, 2 and 4; reference: stage 7's CV (global). Same
# 5 CV seeds and folds. Rule (stage 8's): the highest seed-ensemble CV splice snippet AUC *live* among the
# reference and the candidates whose ensemble CV splice snippet AUC offline is at least 0.960 (the reference's
# minus 0.005); ties within 0.005 go to the larger w (nearer the paper). A pick goes through stage 8's test gate:
# its full-no-gmm row as seed ensembles over 25 seeds in five groups must reach the shipped ensemble's five-group
# means (95.6 AUC / 84.6 AnoAUC). Only then is the group 42-46 shipped, the rest of its ladder run (every MoTAR
# row carries the window; the base row has no MoTAR) and the offline-vs-live figure measured. **Honesty note:**
# the cause was read from earlier test ladders, as for stages 4 to 8.
cv5 cv9 "$CV"/stage9_*.json
# Result: ensemble CV splice snippet AUC offline / live: w = 1 0.956 / 0.951 (below the floor), w = 2 0.962 / 0.959,
# w = 4 0.965 / 0.963, reference 0.965 / 0.931; w = 4 is picked (the highest live row; w = 2 is within 0.005 and
# the tie goes to the larger w anyway). Its gate row, then its group 42-46 through the live window:
gate_row stage9 "$CV/stage9_window4.json"
# Result: AUC 94.8 +/- 1.0, AnoAUC 81.7 +/- 3.6 against the gate's 95.6 / 84.6, so it is not shipped and the
# rest of its ladder was not run. For the record, its group 42-46 through the live window on the test split:
# 0.980 live against 0.957 offline.
