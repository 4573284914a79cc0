#!/usr/bin/env bash
# The GPU measurements of docs/results (paper A on one GPU), one part per call so each fits a 10-minute slot:
#
#   bash benchmarks/gpu_frontier.sh calibrate  # 2 epochs of gpu-fast on the coarse labels: seconds per epoch
#   bash benchmarks/gpu_frontier.sh gpu-fast   # reproduce cifar10-coarse5 --recipe gpu-fast (+ its 10-class baseline)
#   bash benchmarks/gpu_frontier.sh grid       # paper A's lr x wd grid, 9 cells of gpu-fast, EPOCHS each (default 8)
#   bash benchmarks/gpu_frontier.sh paper-baseline  # the paper recipe on the 10 labels, EPOCHS (default 15) epochs
#   bash benchmarks/gpu_frontier.sh throughput # benchmarks/train_throughput.py and nc_metrics.py on cuda
#
# Needs NCLAB_DATA (the folder of cifar10-jpeg.tar.gz) and a CUDA GPU. Run folders go to OUT (default runs/gpu);
# each part prints its wall time and the card. PYTHON: the interpreter with nclab (default .venv/bin/python).
set -euo pipefail
part=${1:?"usage: gpu_frontier.sh calibrate|gpu-fast|grid|paper-baseline|throughput"}
OUT=${OUT:-runs/gpu}
if [ -x .venv/bin/python ]; then PYTHON=${PYTHON:-.venv/bin/python}; else PYTHON=${PYTHON:-python}; fi
NCLAB="$PYTHON -m nclab"
mkdir -p "$OUT"
$PYTHON - <<'EOF'
import torch
if not torch.cuda.is_available():
    raise SystemExit("error: no CUDA GPU; these measurements are GPU-only (run them on a GPU machine)")
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
EOF
start=$(date +%s)
case "$part" in
  calibrate)
    $NCLAB reproduce cifar10-coarse5 --recipe gpu-fast --epochs 2 --no-baseline --device cuda \
      --out "$OUT/gpu-fast-calibrate" --force --json > "$OUT/gpu-fast-calibrate.json" ;;
  gpu-fast)
    $NCLAB reproduce cifar10-coarse5 --recipe gpu-fast --device cuda --out "$OUT/gpu-fast-coarse5" --json \
      > "$OUT/gpu-fast-coarse5.json" ;;
  grid)
    $NCLAB sweep cifar10-coarse5 --recipe gpu-fast --epochs "${EPOCHS:-8}" --device cuda \
      --grid lr=0.1,0.01,0.001 wd=5e-3,5e-4,5e-5 --out "$OUT/gpu-fast-grid" ;;
  paper-baseline)
    $NCLAB train --config paper_resnet18 --set optim.epochs="${EPOCHS:-15}" --device cuda \
      --run-dir "$OUT/paper-baseline-${EPOCHS:-15}" ;;
  throughput)
    $PYTHON benchmarks/train_throughput.py --device cuda
    $PYTHON benchmarks/nc_metrics.py --device cuda ;;
  *) echo "error: unknown part $part" >&2; exit 2 ;;
esac
echo "$part: $(( $(date +%s) - start )) s wall"
