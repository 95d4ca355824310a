#!/usr/bin/env bash
# bench/gpu.sh: every GPU measurement mnistlab wants (issue 21), in one call of at most 8 minutes on one GPU.
#
#   bash bench/gpu_prepare.sh              # first, where the package registries are: fills .device/
#   bash bench/gpu.sh "$OUT"               # on the GPU machine, from a checkout that carries .device/
#   PYTHON=.venv/bin/python bash bench/gpu.sh --rehearse /tmp/gpu_rehearsal   # the same steps on a CPU, tiny
#
# Steps, most wanted first (each one guarded: a failure or a time-out is recorded and the next one runs):
# the machine; the wheels from .device/wheels (pip, offline); MNIST from .device/mnist, unpacked; the GPU
# tests (pytest -m gpu); bench/speedrun.py, 5 seeds, then with bf16 autocast, batch 512 and 1024,
# torch.compile and reduce-overhead (CUDA graphs); `mnistlab train configs/iter5.yaml` (20 epochs), fp32 and
# bf16, with and without compile; best.yaml, 3 seeds, with its test accuracy; bench/throughput.py (the device
# and classic pipelines, the reference loop) and bench/scaling.py (vgg16 at 32x32 included, fp32 and bf16);
# `mnistlab compare --jobs 1/2/4` and `mnistlab sweep --jobs 4` (optional: only where that command exists)
# on the one GPU.
#
# Options:
#   --rehearse        (or MNISTLAB_GPU_REHEARSE=1) every step on the CPU with tiny settings: 1 epoch of a few
#                     batches, 1-2 seeds; the GPU tests skip
#   --budget S        seconds for all the steps (default 450; 1800 rehearsing): a step that would not fit in
#                     what is left is skipped, and no step runs past it
#   --work DIR        run directories, logs and unpacked data (default /tmp/mnistlab-gpu)
#   --only A,B        only these steps (env, install and data always run)
# Environment: PYTHON (default python3, the GPU machine's), MNISTLAB_DATA_DIR where .device/mnist is absent,
# MNISTLAB_GPU_SWEEP_ARGS (the sweep step's sweep file and options before --jobs).
#
# Into OUT, refreshed after every step so that a call cut short keeps what had finished (the device tool
# brings back at most 8 files, hence the logs travel packed):
#   steps.tsv      step, status (ok, FAILED, TIMEOUT, skipped, n/a), exit code, seconds, headline
#   summary.md     the same as a table, then each step's figures
#   logs.tar.gz    logs/<step>.log for every step, the runs' summary.json and metrics.csv, compare's and sweep's tables
# Exit status: 0 when no step failed or timed out, 1 otherwise, 2 for a usage error or no GPU.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
REHEARSE=${MNISTLAB_GPU_REHEARSE:-0}
WORK=/tmp/mnistlab-gpu
BUDGET=""
ONLY=""
OUT_DIR=""
PY=${PYTHON:-python3}
PACKAGES=(pydantic torchsummary optuna pytest hypothesis)  # what .device/wheels brings (bench/gpu_prepare.sh)

usage() { sed -n '2,37p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --rehearse) REHEARSE=1; shift ;;
    --budget) BUDGET=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT_DIR=$1; shift ;;
  esac
done
if [[ -z $OUT_DIR ]]; then
  echo "gpu.sh: give the folder for the figures and logs (on the GPU machine: bash bench/gpu.sh \"\$OUT\")" >&2
  exit 2
fi
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
[[ $REHEARSE == 1 ]] && BUDGET=${BUDGET:-1800}
BUDGET=${BUDGET:-460}
LOGS=$WORK/logs
rm -rf "$LOGS" "$WORK/runs" "$WORK/data" "$WORK/site"
mkdir -p "$LOGS" "$WORK/runs"
: >"$OUT_DIR/steps.tsv"
STARTED=$(date +%s)
DEADLINE=$((STARTED + BUDGET))
FAILURES=0
declare -A FIGURES=()  # step -> regex of its log lines that summary.md shows

# ------------------------------------------------------------------------------------------------ settings
if [[ $REHEARSE == 1 ]]; then
  MODE="rehearsal on the CPU (tiny settings: the figures mean nothing)"
  DEV=cpu
  SEEDS=2; VARIANT_SEEDS=1; BEST_SEEDS=1,2; RUN_SEEDS=1,2; TRIALS=4
  SHORT="--set train.epochs=1 --set train.limit_train_batches=5"       # speedrun.py scores every image
  TINY="$SHORT --set train.limit_eval_batches=1"                       # mnistlab train and compare
  THROUGHPUT="--rounds 1 --batches 5"
  SCALING="--models iter5,cnn3_bn --steps 1"                            # vgg16: minutes a step on 2 cores
  SCALING_BF16=$SCALING
  PIP_MODE="--dry-run"                                                  # resolve from the wheels, install nothing
  CAP_SCALE=3                                                           # a CPU takes longer over every step
else
  MODE="GPU"
  DEV=cuda
  SEEDS=5; VARIANT_SEEDS=5; BEST_SEEDS=1,2,3; RUN_SEEDS=1,2,3,4; TRIALS=8
  SHORT=""; TINY=""
  THROUGHPUT="--rounds 2 --batches 300"
  SCALING="--models iter5,cnn3_bn,cnn_large,vgg16,cnn5_bn,speedrun,compact8k --steps 100"
  SCALING_BF16=$SCALING
  PIP_MODE=""
  CAP_SCALE=1
fi
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null || echo 3)
SITE=$WORK/site/lib/python$PYVER/site-packages  # used only if pip cannot write the interpreter's own
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if [[ -d .device/mnist/MNIST/raw ]]; then
  DATA_DIR=$WORK/data
else
  DATA_DIR=${MNISTLAB_DATA_DIR:-$REPO/../shared/data}
fi
export MNISTLAB_DATA_DIR=$DATA_DIR
MNISTLAB="$PY -m mnistlab"
SPEEDRUN="$PY bench/speedrun.py --device $DEV"
ITER5="$MNISTLAB train configs/iter5.yaml --device $DEV $TINY"

# ------------------------------------------------------------------------------------------------ machinery
selected() {  # STEP: whether --only lets it run
  [[ -z $ONLY || $1 == env || $1 == install || $1 == data || ",$ONLY," == *",$1,"* ]]
}

run_step() {  # STEP NEED_S CAP_S HEADLINE_RE FIGURES_RE COMMAND: COMMAND (bash) under min(CAP_S, budget left)
  local step=$1 need=$2 cap=$3 head=$4 command=$6 left rc=0 status start seconds line
  FIGURES[$step]=$5
  selected "$step" || return 0
  left=$((DEADLINE - $(date +%s)))
  cap=$((cap * CAP_SCALE))
  if ((left < need)); then
    record "$step" skipped - 0 "not started: ${left} s of the budget left, it takes about ${need} s"
    return 0
  fi
  if ((cap > left)); then cap=$left; fi
  printf '$ %s\n(at most %s s)\n\n' "$command" "$cap" >"$LOGS/$step.log"
  start=$(date +%s.%N)
  timeout --kill-after=10 "$cap" bash -o pipefail -c "$command" >>"$LOGS/$step.log" 2>&1 </dev/null || rc=$?
  seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  case $rc in
    0) status=ok ;;
    124|137) status=TIMEOUT; FAILURES=$((FAILURES + 1)) ;;
    *) status=FAILED; FAILURES=$((FAILURES + 1)) ;;
  esac
  if [[ $status == ok ]]; then
    line=$(grep -E -- "$head" "$LOGS/$step.log" | tail -n 1 || true)
  else  # the error: the log's last line that says something
    line=$(grep -v '^[[:space:]]*$' "$LOGS/$step.log" | tail -n 1 || true)
  fi
  record "$step" "$status" "$rc" "$seconds" "$line"
}

record() {  # STEP STATUS RC SECONDS HEADLINE: one row of steps.tsv, one line on the terminal, OUT refreshed
  local headline
  headline=$(printf '%s' "$5" | tr '\t' ' ' | tr -s ' ' | sed 's/^ //' | cut -c1-240)
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$headline" >>"$OUT_DIR/steps.tsv"
  printf '[%4ds] %-26s %-8s %7ss  %s\n' "$(($(date +%s) - STARTED))" "$1" "$2" "$4" "${headline:0:110}"
  publish
}

publish() {  # summary.md and logs.tar.gz from steps.tsv and the logs
  local step status rc seconds headline
  {
    echo "# bench/gpu.sh: $MODE"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(cat "$WORK/machine.txt" 2>/dev/null || echo 'machine not read yet');"
    echo "budget ${BUDGET} s, $(($(date +%s) - STARTED)) s used. Full logs: logs.tar.gz (logs/<step>.log)."
    echo
    echo "| step | status | exit | seconds | headline |"
    echo "|---|---|---:|---:|---|"
    while IFS=$'\t' read -r step status rc seconds headline; do
      echo "| $step | $status | $rc | $seconds | ${headline//|/\\|} |"
    done <"$OUT_DIR/steps.tsv"
    echo
    echo "## Figures"
    while IFS=$'\t' read -r step status rc seconds headline; do
      [[ -f $LOGS/$step.log && -n ${FIGURES[$step]:-} ]] || continue
      echo
      echo "### $step ($status, $seconds s)"
      echo
      echo '```'
      awk 'shown; /^\(at most [0-9]+ s\)$/ { shown = 1 }' "$LOGS/$step.log" | grep -E -- "${FIGURES[$step]}" |
        head -n 60 || true
      echo '```'
    done <"$OUT_DIR/steps.tsv"
  } >"$OUT_DIR/summary.md.part"
  mv "$OUT_DIR/summary.md.part" "$OUT_DIR/summary.md"
  (cd "$WORK" && find logs runs -type f \( -name '*.log' -o -name summary.json -o -name metrics.csv \
     -o -name 'comparison.md' -o -name 'comparison.csv' -o -name 'trials.md' \) -print0 |
     tar --null -czf "$OUT_DIR/logs.tar.gz.part" --files-from=-)
  mv "$OUT_DIR/logs.tar.gz.part" "$OUT_DIR/logs.tar.gz"
}

# ------------------------------------------------------------------------------------------------ steps
echo "bench/gpu.sh: $MODE; python $PY; budget $BUDGET s; work $WORK; out $OUT_DIR"

run_step env 5 60 'CUDA available' '.' "
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
  echo; uname -srm; nproc; free -g | head -2
  $PY -c 'import sys, torch; cuda = torch.cuda.is_available()
print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda,
      \"cudnn\", torch.backends.cudnn.version() if cuda else None)
print(\"CUDA available:\", cuda, torch.cuda.get_device_name() if cuda else \"(no GPU)\",
      torch.cuda.get_device_capability() if cuda else \"\")'
  $PY -m pip list --disable-pip-version-check 2>/dev/null |
    grep -iE '^(torch|torchvision|triton|numpy|pyyaml|tqdm|pydantic|pydantic.core|torchsummary|optuna|pytest|hypothesis) ' || true"
grep -E '^(python|CUDA available)' "$LOGS/env.log" | tr '\n' ' ' >"$WORK/machine.txt" || true
if [[ $REHEARSE != 1 ]] && ! grep -q '^CUDA available: True' "$LOGS/env.log"; then
  record no-gpu FAILED 2 0 "torch sees no CUDA GPU here: nothing measured (on a CPU, rehearse with --rehearse)"
  exit 2
fi

run_step install 5 120 '^installed:' '^(installed:|Would install|Successfully installed)' "
  test -d .device/wheels || { echo 'no .device/wheels: run bash bench/gpu_prepare.sh and name .device in carry'; exit 1; }
  pip_install() { $PY -m pip install --isolated --no-index --find-links .device/wheels --disable-pip-version-check \
                    --no-cache-dir $PIP_MODE \"\$@\" ${PACKAGES[*]}; }
  pip_install || { echo 'the interpreter cannot be written to: into $WORK/site instead'; pip_install --prefix $WORK/site; }
  $PY -c 'from importlib.metadata import version as v
print(\"installed:\", \", \".join(f\"{n} {v(n)}\" for n in \"${PACKAGES[*]}\".split()))'"

run_step data 5 60 '^MNIST:' '^MNIST:' "
  if [[ -d .device/mnist/MNIST/raw ]]; then
    mkdir -p $DATA_DIR/MNIST/raw
    for f in .device/mnist/MNIST/raw/*.gz; do gunzip -c \"\$f\" >$DATA_DIR/MNIST/raw/\$(basename \"\$f\" .gz); done
    echo 'unpacked .device/mnist into $DATA_DIR'
  fi
  $PY -c 'from pathlib import Path; from mnistlab.data import DATASETS, load_split
root = Path(\"$DATA_DIR\"); n = [len(load_split(DATASETS[\"mnist\"], root, train=t, download=False)[1]) for t in (True, False)]
print(f\"MNIST: {n[0]:,} training and {n[1]:,} test images in {root}\")'"

run_step gpu-tests 20 180 '(passed|failed|skipped|error)' '(passed|failed|skipped|error|^FAILED|^ERROR)' "
  $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py"

SPEEDRUN_FIGURES='^(speedrun:|  warm-up|  seed|mean)'
run_step speedrun 15 120 '^mean over' "$SPEEDRUN_FIGURES" "$SPEEDRUN --seeds $SEEDS $SHORT"

TRAIN_FIGURES='^(iter5:|epoch |early stopping|test accuracy)'
run_step iter5 20 150 '^test accuracy' "$TRAIN_FIGURES" "$ITER5 --out-dir $WORK/runs/iter5"

run_step speedrun-reduce-overhead 45 180 '^mean over' "$SPEEDRUN_FIGURES" "
  $SPEEDRUN --seeds $VARIANT_SEEDS $SHORT --set train.compile=reduce-overhead"
run_step speedrun-compile 45 180 '^mean over' "$SPEEDRUN_FIGURES" "
  $SPEEDRUN --seeds $VARIANT_SEEDS $SHORT --set train.compile=true"
run_step speedrun-bf16 15 90 '^mean over' "$SPEEDRUN_FIGURES" "$SPEEDRUN --seeds $VARIANT_SEEDS $SHORT --set train.amp=bf16"

COMPARE_FIGURES='^(== |config |best |speedrun |Test loss|[0-9]+ config)'
run_step best 45 240 '^best ' "$COMPARE_FIGURES" "
  $MNISTLAB compare configs/best.yaml --seeds $BEST_SEEDS --no-reuse --out-dir $WORK/runs/best --set device=$DEV $TINY"
run_step iter5-bf16 20 150 '^test accuracy' "$TRAIN_FIGURES" "
  $ITER5 --set train.amp=bf16 --out-dir $WORK/runs/iter5-bf16"
run_step speedrun-b512 15 90 '^mean over' "$SPEEDRUN_FIGURES" "
  $SPEEDRUN --seeds $VARIANT_SEEDS $SHORT --set train.batch_size=512 --set train.optimizer.lr=0.02"
run_step speedrun-b1024 15 90 '^mean over' "$SPEEDRUN_FIGURES" "
  $SPEEDRUN --seeds $VARIANT_SEEDS $SHORT --set train.batch_size=1024 --set train.optimizer.lr=0.03"

run_step throughput 40 180 '^mnistlab device / mnistlab classic' '(^model |images/s$|x the reference loop|classic pipeline)' "
  $PY bench/throughput.py --device $DEV $THROUGHPUT"
run_step scaling 20 120 '^  (cnn3_bn|vgg16) +[0-9]{1,3}(,[0-9]{3})+ ' '.' "$PY bench/scaling.py --device $DEV --amp off $SCALING"
run_step scaling-bf16 20 120 '^  (cnn3_bn|vgg16) +[0-9]{1,3}(,[0-9]{3})+ ' '.' "$PY bench/scaling.py --device $DEV --amp bf16 $SCALING_BF16"
run_step iter5-compile 45 200 '^test accuracy' "$TRAIN_FIGURES" "
  $ITER5 --set train.compile=true --out-dir $WORK/runs/iter5-compile"

for jobs in 1 2 4; do  # the same runs at once on the one GPU: the step's seconds are the figure
  run_step "compare-jobs$jobs" 25 120 '^[0-9]+ config' "$COMPARE_FIGURES" "
    $MNISTLAB compare configs/speedrun.yaml --seeds $RUN_SEEDS --jobs $jobs --no-reuse \
      --out-dir $WORK/runs/jobs$jobs --set device=$DEV $TINY"
done

# OPTIONAL: runs only where `mnistlab sweep --help` works. iter5's learning-rate sweep, shortened to 2 epochs a
# trial: 4 workers on the one GPU; the step's seconds are the figure, beside compare's.
if $PY -m mnistlab sweep --help >/dev/null 2>&1; then
  run_step sweep-jobs4 45 150 '^best: trial' '^(sweep |trial |best:)' "
    $MNISTLAB sweep ${MNISTLAB_GPU_SWEEP_ARGS:-sweeps/iter5_lr.yaml --n-trials $TRIALS --set train.epochs=2} \
      --jobs 4 --out-dir $WORK/runs/sweep --set device=$DEV $TINY"
elif selected sweep-jobs4; then
  record sweep-jobs4 n/a - 0 "optional, not run: this mnistlab has no \`mnistlab sweep\` command"
fi

run_step iter5-compile-bf16 45 200 '^test accuracy' "$TRAIN_FIGURES" "
  $ITER5 --set train.compile=true --set train.amp=bf16 --out-dir $WORK/runs/iter5-compile-bf16"

# ------------------------------------------------------------------------------------------------ the end
publish
echo
sed -n '/^| step/,/^$/p' "$OUT_DIR/summary.md"
echo "$FAILURES step(s) failed or timed out; $(($(date +%s) - STARTED)) s; figures: $OUT_DIR/summary.md"
if ((FAILURES)); then exit 1; fi
