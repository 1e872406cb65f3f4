#!/usr/bin/env bash
# GPU readiness check, under ten minutes on one GPU. From the repository root:
#
#     bash benchmarks/gpu_check.sh            # uses .venv/bin/python if present, else python3
#     PYTHON=/path/to/python bash benchmarks/gpu_check.sh
#
# Needs stnkit and its plugins installed (pip install -r requirements-dev.txt) and a CUDA build of
# torch. Prints, in order:
#   1. the best-response layers' overhead ratios on CUDA (benchmarks/overhead.py --device cuda);
#   2. weight steps per second and peak memory for a few hundred steps of each paper-scale recipe
#      (recipes/ptb-lstm.yaml, recipes/cifar10-alexnet.yaml) in fp32 and bf16;
#   3. the same for a two-rank data-parallel run (torchrun, nccl) when the machine has two GPUs;
#   4. the batched augmentation chain's throughput on CUDA (benchmarks/augment_throughput.py);
#   5. where a CPU recipe's wall time goes, and its tuning/fixed-twin ratio, with device=cuda
#      (benchmarks/profile_run.py, benchmarks/run_ratio.py; short schedules, one repeat).
# PTB comes with the repository (recipes/data/ptb.zip). CIFAR-10 is used from data/cifar10 if it is
# there; otherwise synthetic images of the same shape are written to a temporary folder (the
# timings are the same; the accuracies mean nothing).
# Without CUDA it runs a CPU smoke test instead: quick overhead ratios and a few steps of the
# CPU-scale recipes, to show the script works. Timings are only meaningful on a quiet machine.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONWARNINGS=ignore
STEPS=${STEPS:-300}
FAILED=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/stnkit-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# each part gets its own time limit, so one hang cannot eat the whole budget
step() {
    local limit=$1
    shift
    echo "\$ $*"
    timeout --kill-after=10 "$limit" "$@"
    local code=$?
    if [[ $code -ne 0 ]]; then
        echo "!! exit $code: $*"
        FAILED=1
    fi
}

if ! "$PYTHON" -c "import stnkit, stnkit_lstm, stnkit_cnn" 2>/dev/null; then
    echo "stnkit and its plugins are not importable with $PYTHON: pip install -r requirements-dev.txt" >&2
    exit 2
fi
GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
"$PYTHON" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)"
      + (f": {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
EOF

if [[ "$GPUS" -eq 0 ]]; then
    echo "== no CUDA device: CPU smoke test only =="
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
    step 300 "$PYTHON" benchmarks/overhead.py --quick --repeats 2 --only layers
    step 300 "$PYTHON" benchmarks/gpu_steps.py recipes/ptb-small.yaml --steps 6 --skip 2 --warmup 2 \
        --set device=cpu
    step 120 "$PYTHON" benchmarks/augment_throughput.py --reps 3
    step 300 "$PYTHON" benchmarks/profile_run.py recipes/toy-ridge.yaml --set train.epochs=10
    step 300 "$PYTHON" benchmarks/run_ratio.py recipes/toy-ridge.yaml --repeats 1 --set train.epochs=10
    exit $FAILED
fi

echo "== 1. best-response layer overhead on CUDA (2.0x is the floor: the response doubles the weight FLOPs) =="
step 90 "$PYTHON" benchmarks/overhead.py --device cuda --repeats 20

CIFAR_SET=()
if [[ ! -e data/cifar10 ]]; then
    echo "(no data/cifar10: synthetic CIFAR-10 images for timing)"
    "$PYTHON" benchmarks/gpu_steps.py --make-cifar "$WORK/cifar10"
    CIFAR_SET=(--set "data.root=$WORK/cifar10" --set data.valid_size=2000)
fi

echo "== 2. paper-scale recipes, $STEPS weight steps each, one GPU =="
for precision in fp32 bf16; do
    step 110 "$PYTHON" benchmarks/gpu_steps.py recipes/ptb-lstm.yaml --precision "$precision" \
        --steps "$STEPS" --set device=cuda
    step 80 "$PYTHON" benchmarks/gpu_steps.py recipes/cifar10-alexnet.yaml --precision "$precision" \
        --steps "$STEPS" --set device=cuda "${CIFAR_SET[@]}"
done

if [[ "$GPUS" -ge 2 ]]; then
    echo "== 3. two ranks (torchrun, nccl): the global batch splits in two =="
    PORT=$("$PYTHON" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
    step 120 "$PYTHON" -m torch.distributed.run --nproc_per_node=2 --master_addr=127.0.0.1 \
        --master_port="$PORT" benchmarks/gpu_steps.py recipes/ptb-lstm.yaml --precision bf16 \
        --steps "$STEPS" --set device=cuda
else
    echo "== 3. skipped: one GPU (the two-rank run needs two) =="
fi

echo "== 4. batched augmentation chain on CUDA (images/s; batched against a per-image loop) =="
step 60 "$PYTHON" benchmarks/augment_throughput.py --device cuda --reps 10

echo "== 5. where the time goes, and tuning/twin wall time, CPU recipes on CUDA =="
step 120 "$PYTHON" benchmarks/profile_run.py recipes/cifar10-small.yaml --set device=cuda \
    --set train.epochs=2
step 90 "$PYTHON" benchmarks/run_ratio.py recipes/cifar10-small.yaml --repeats 1 --set device=cuda \
    --set train.epochs=2
step 60 "$PYTHON" benchmarks/run_ratio.py recipes/toy-ridge.yaml --repeats 1 --set device=cuda
exit $FAILED
