#!/usr/bin/env bash
# The CUDA path through the real CLI, in one go: train a ResNet-18 on synthetic data with bf16
# autocast and channels_last, crash it (SIGKILL) and --resume it, evaluate it, time and measure
# it (CUDA events, max memory allocated), export it (safetensors and ONNX, logits verified), then
# one short fp16 run (GradScaler) and one short --compile run. About 330 optimizer steps in all,
# sized for under 3 minutes on one GPU (not yet measured: no GPU has run it). See docs/cuda.md.
#
#   bash benchmarks/cuda_smoke.sh          # on a machine with a CUDA GPU
#   bash benchmarks/cuda_smoke.sh --cpu    # dry run of the same steps on the CPU, tiny sizes
#
# Environment: PY (python with cnnzoo's dependencies, default .venv/bin/python), SMOKE_DIR
# (work folder, default a fresh /tmp/cuda_smoke.*, kept), SMOKE_COMPILE (1/0: the --compile
# step; default 1 on CUDA, 0 with --cpu, where inductor's C++ build takes minutes).
# Every step prints one "== step" line, its output, and "ok step (N s)"; the first failure
# stops the script with "FAILED step" and a non-zero exit.
set -euo pipefail

usage() { echo "usage: bash benchmarks/cuda_smoke.sh [--cpu]" >&2; exit 2; }
MODE=cuda
if [[ $# -gt 1 ]]; then usage; fi
if [[ $# -eq 1 ]]; then
    [[ $1 == --cpu ]] || usage
    MODE=cpu
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's cnnzoo, not another
[[ -x $PY ]] || command -v "$PY" >/dev/null || { echo "cuda_smoke: no python at PY=$PY" >&2; exit 2; }
cnnzoo() { "$PY" -m cnnzoo "$@"; }

if [[ $MODE == cuda ]]; then
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "cuda_smoke: no CUDA device found (torch.cuda.is_available() is False); nothing run (--cpu: dry run on the CPU)" >&2
        exit 1
    fi
    DEVICE=cuda PRECISION=bf16
    DATA=synthetic:3x64x64:10:14336  # 90% train: 100 steps of 128 per epoch
    BATCH=128 EPOCHS=3 KILL_AT=train:2:50 SHORT_DATA=synthetic:3x64x64:10:2304
    INPUT=3x64x64 SIZES=1,32,128 COMPILE=${SMOKE_COMPILE:-1}
else
    DEVICE=cpu COMPILE=${SMOKE_COMPILE:-0}
    # bf16 on a CPU only where it is native (train refuses it elsewhere); fp16 is CUDA-only.
    if "$PY" -c 'import sys; from cnnzoo.train.device import cpu_supports_bf16 as s; sys.exit(not s())'
    then PRECISION=bf16; else PRECISION=fp32; fi
    DATA=synthetic:3x32x32:10:160  # 90% train: 9 steps of 16 per epoch
    BATCH=16 EPOCHS=3 KILL_AT=train:2:5 SHORT_DATA=synthetic:3x32x32:10:160
    INPUT=3x32x32 SIZES=1,8
fi
WORK=${SMOKE_DIR:-$(mktemp -d /tmp/cuda_smoke.XXXXXX)}
RUN=$WORK/resnet18
mkdir -p "$WORK"
echo "cuda_smoke: mode $MODE, precision $PRECISION, channels_last, data $DATA, batch $BATCH, $EPOCHS epochs, work $WORK"

STEP="" T0=0 START=$SECONDS
begin() { STEP=$1; T0=$SECONDS; echo; echo "== $STEP"; }
ok() { echo "ok $STEP ($((SECONDS - T0)) s)"; }
trap 'rc=$?; [[ $rc -eq 0 ]] || echo "FAILED $STEP (exit $rc); files in $WORK" >&2' EXIT

TRAIN=(resnet18 --data "$DATA" --out "$RUN" --device "$DEVICE" --precision "$PRECISION"
       --channels-last --epochs "$EPOCHS" --batch-size "$BATCH" --lr 0.05 --seed 0
       --checkpoint-every 1)  # not --quiet: the resume line is what proves the resume

begin "train: ResNet-18, $PRECISION autocast, channels_last, SIGKILL at $KILL_AT"
rc=0
CNNZOO_TEST_KILL_AT=$KILL_AT cnnzoo train "${TRAIN[@]}" || rc=$?
[[ $rc -eq 137 ]] || { echo "expected the SIGKILL at $KILL_AT (exit 137), got exit $rc" >&2; exit 1; }
[[ -f $RUN/last.pt ]] || { echo "no last.pt before the kill" >&2; exit 1; }
echo "killed as planned (exit 137); last.pt and best.pt: $(ls "$RUN" | tr '\n' ' ')"
ok

begin "resume: --resume to epoch $EPOCHS"
cnnzoo train "${TRAIN[@]}" --resume | tee "$WORK/resume.log"
grep -q "resuming" "$WORK/resume.log" || { echo "no 'resuming' line: it started afresh" >&2; exit 1; }
"$PY" - "$RUN" "$EPOCHS" <<'EOF'
import json, sys
from pathlib import Path
run, epochs = Path(sys.argv[1]), int(sys.argv[2])
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
env = json.loads((run / "env.json").read_text())
for r in rows:
    print(f"epoch {r['epoch']}: step {r['global_step']}, train loss {r['train_loss']:.4f}, "
          f"val acc {100 * r['val_acc']:.1f}%, {r['train_images_per_s']:.0f} img/s")
print(f"env.json: device {env['device']} {env['gpus']}, precision {env['precision']}, "
      f"torch {env['torch']}, cuda {env['cuda']}")
assert [r["epoch"] for r in rows] == list(range(1, epochs + 1)), "metrics rows != epochs"
assert all(r["train_loss"] == r["train_loss"] for r in rows), "a NaN training loss"
EOF
ok

begin "eval: best.pt on the test split"
cnnzoo eval "$RUN/best.pt" --device "$DEVICE" --out "$WORK/eval"
ok

begin "profile: $DEVICE timing and peak memory, fp32, $INPUT, batch sizes $SIZES"
cnnzoo summary resnet18 --input "$INPUT" --by-stage --timing --batch-sizes "$SIZES" \
    --device "$DEVICE" --json "$WORK/summary.json" | grep -E "^(Batch|Measured|Total MACs|Note)"
ok

begin "export: safetensors and ONNX, logits checked against PyTorch"
cnnzoo export "$RUN/best.pt" --format safetensors --out "$WORK/resnet18.safetensors"
cnnzoo export "$RUN/best.pt" --format onnx --out "$WORK/resnet18.onnx"
ok

if [[ $MODE == cuda ]]; then
    begin "fp16: autocast with GradScaler, 1 epoch"
    cnnzoo train resnet18 --data "$SHORT_DATA" --out "$WORK/fp16" --device cuda --precision fp16 \
        --channels-last --epochs 1 --batch-size "$BATCH" --lr 0.05 --quiet
    "$PY" - "$WORK/fp16/last.pt" <<'EOF'
import math, sys
from cnnzoo.checkpoint import load_checkpoint
ckpt = load_checkpoint(sys.argv[1])
scaler = ckpt["scaler"]
assert scaler is not None, "fp16 run saved no GradScaler state"
loss = ckpt["metrics"][-1]["train_loss"]
print(f"GradScaler scale {scaler['scale']:g} after {ckpt['global_step']} steps; "
      f"train loss {loss:.4f}")
assert math.isfinite(loss), "fp16 training loss is not finite"
EOF
    ok
fi

if [[ $COMPILE == 1 ]]; then
    begin "compile: --compile, 1 epoch"
    cnnzoo train resnet18 --data "$SHORT_DATA" --out "$WORK/compiled" --device "$DEVICE" \
        --precision "$PRECISION" --channels-last --compile --epochs 1 --batch-size "$BATCH" \
        --lr 0.05 | tail -n 3
    ok
fi

STEP=done
echo
echo "cuda_smoke: all steps passed in $((SECONDS - START)) s (mode $MODE); files in $WORK"
