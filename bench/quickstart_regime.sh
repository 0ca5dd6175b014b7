#!/bin/bash
# Quickstart candidates, 3 seeds each, one process at a time with `mixtrain train` (no Ray), 1 thread.
# Usage: bench/quickstart_regime.sh step20 short   (results under $ROOT; summary: bench/quickstart_regime.py)
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
run() { # name seed variant budget extra...
  local name=$1 seed=$2 variant=$3 budget=$4; shift 4
  $PY -m orchestrate.cli train --config sweeps/runs/quickstart.yaml --root ${ROOT:-/tmp/quickstart-regime} \
    --set name=$name --set seed=$seed --set variant=$variant --set budget=$budget \
    --set model_width=16 --set dataset.image_size=32 --set batch_size=64 --set optimizer.lr=0.05 "$@" \
    > ${ROOT:-/tmp/quickstart-regime}/logs/$name-$seed-$variant-$budget.log 2>&1
}
mkdir -p ${ROOT:-/tmp/quickstart-regime}/logs
for cand in "$@"; do
  case $cand in
    short) args=(--set epochs=8 --set schedule.kind=cosine); budgets="" ;;
    step20) args=(--set epochs=20 --set schedule.kind=step --set schedule.step_epochs=8); budgets="0.67 0.8" ;;
  esac
  for seed in 0 1 2; do
    for v in baseline mixtrain-cutmix mixtrain-mixup; do run $cand $seed $v 1.0 "${args[@]}"; done
    for b in $budgets; do run $cand $seed baseline $b "${args[@]}"; done
  done
  echo "$cand done $(date)" >> ${ROOT:-/tmp/quickstart-regime}/logs/progress
done
