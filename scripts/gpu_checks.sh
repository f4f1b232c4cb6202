#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in as few calls as possible, writing its results to OUT.
#
#   bash scripts/gpu_checks.sh OUT [SECTION ...]      sections: tests bench full ema0 ema1
#                                                     ema2 cdcgan (default: tests bench)
#
# section  what                                                              time limit
# tests    the CUDA tests (fp16/bf16, CUDA graphs against eager, resume,
#          no host sync per step), the CUDA-graph plumbing tests and the R3GAN and
#          StyleGAN2 pairs under perf.cuda_graph and perf.compile                300 s
# bench    scripts/bench.py on the reference recipe: plain PyTorch, eager,
#          compile, graph; writes bench.json and the README table bench.md      180 s
# full     the reference recipe, 60,000 iterations, graph mode, timed, metrics  360 s
# emaN     the reference recipe for 10,000 iterations on seed N (0, 1, 2),
#          without and with EMA, each evaluated                              2 x 120 s
# cdcgan   the class-conditional recipe, 10,000 iterations, label accuracy      150 s
#
# Each section has its own time limit and the script goes on after a failure, so one command
# should ask for no more than its sections' limits add up to: `tests bench` (480 s) in one
# call, `full` (360 s) in the next, then `ema0 ema1` (480 s) and `ema2 cdcgan` (390 s).
#
# What comes back is kept to a few files: OUT/summary.txt (each section's exit code and
# seconds), OUT/device.txt, OUT/bench.json, OUT/bench.md, and OUT/results.tgz with every log
# and each run's metrics, run_info.json, loss plot and last sample grid (rewritten after each
# section, so a call stopped at its limit still returns what finished).
#
# A folder `.gpu/` in the project root with wheels (*.whl) and MNIST's four *.gz files is
# installed and unpacked first, for machines without network or those packages (see
# CONTRIBUTING.md).
set -u
out=${1:?usage: bash scripts/gpu_checks.sh OUT [tests] [bench] [full] [ema0] [ema1] [ema2] [cdcgan]}
shift
sections=${*:-tests bench}
for name in $sections; do
  case $name in
    tests | bench | full | ema0 | ema1 | ema2 | cdcgan) ;;
    *)
      echo "unknown section '$name' (sections: tests bench full ema0 ema1 ema2 cdcgan)" >&2
      exit 2
      ;;
  esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/gpu-checks.XXXX)  # logs and run outputs, packed into OUT/results.tgz
cd "$(dirname "$0")/.."

if [ -d .gpu ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/*.whl ||
    echo "installing the wheels in .gpu/ failed" | tee -a "$out/summary.txt"
  export PYTHONPATH=/tmp/site:$PWD
  mkdir -p /tmp/mnist/MNIST/raw
  for f in .gpu/*.gz; do gunzip -c "$f" > "/tmp/mnist/MNIST/raw/$(basename "$f" .gz)"; done
  export GANKIT_MNIST_ROOT=${GANKIT_MNIST_ROOT:-/tmp/mnist}
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} WANDB_MODE=disabled PYTHONUNBUFFERED=1
mnist=${GANKIT_MNIST_ROOT:-../shared/data/mnist}
data="data.root=$mnist data.download=false"
fast="perf.cuda_graph=true perf.data_on_device=true perf.fused_adam=true perf.tf32=true"

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, accelerate, gankit; print('torch', torch.__version__, 'cuda',
torch.version.cuda, 'accelerate', accelerate.__version__, 'gankit', gankit.__version__,
'cuda available', torch.cuda.is_available())"
} > "$out/device.txt" 2>&1
cat "$out/device.txt"

pack() {  # written aside, then renamed: a call stopped mid-write keeps the previous archive
  tar czf "$out/.results.tgz" -C "$work" . 2>/dev/null && mv "$out/.results.tgz" "$out/results.tgz"
}

section() {  # section NAME LIMIT COMMAND...: run it, log it, record its code and time
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "== $name: $*"
  timeout --signal=TERM --kill-after=20 "$limit" "$@" > "$work/$name.log" 2>&1
  local code=$?
  echo "$name exit=$code seconds=$((SECONDS - start))" | tee -a "$out/summary.txt"
  tail -n 5 "$work/$name.log"
  pack
}

# a recipe in the graph mode: train RECIPE output_dir=... and other overrides
train=(python3 -m gankit.cli train)
# shellcheck disable=SC2206
settings=($data $fast train.progress=false train.log_every=1000 train.resume=never)

keep() {  # keep RUN_DIR NAME: a run's small outputs, into the results
  mkdir -p "$work/$2"
  cp "$1"/metrics.jsonl "$1"/run_info.json "$1"/losses.png "$work/$2/" 2>/dev/null
  cp "$(ls "$1"/samples/*.png 2>/dev/null | tail -n 1)" "$work/$2/last_grid.png" 2>/dev/null
  pack
}

for name in $sections; do
  case $name in
    tests)
      # the image's own pytest, without the plugins it would load on its own (pytest-xdist
      # among them: the project's addopts, `-n 2`, are left out with -o addopts=)
      PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 section tests 300 python3 -m pytest -q -o addopts=-ra \
        -p no:cacheprovider tests/test_cuda.py tests/test_graphs.py
      ;;
    bench)
      # shellcheck disable=SC2086
      section bench 180 python3 scripts/bench.py recipes/mnist_dcgan.yaml $data \
        --device cuda --warmup 20 --iters 200 --rounds 5 --outputs-every 100 \
        --json "$out/bench.json" --markdown "$out/bench.md"
      ;;
    full)
      section full 360 "${train[@]}" recipes/mnist_dcgan.yaml "${settings[@]}" \
        output_dir=/tmp/gankit-full train.steps=60000 eval.every=60000 eval.n=10000
      keep /tmp/gankit-full full
      ;;
    ema0 | ema1 | ema2)
      seed=${name#ema}
      for decay in 0 0.999; do
        section "ema_${decay}_seed$seed" 120 "${train[@]}" recipes/mnist_dcgan.yaml \
          "${settings[@]}" "output_dir=/tmp/gankit-ema-$decay-$seed" train.steps=10000 \
          "train.seed=$seed" "ema.decay=$decay" train.sample_every=10000 \
          train.checkpoint_every=10000 eval.every=10000 eval.n=10000
        keep "/tmp/gankit-ema-$decay-$seed" "ema_${decay}_seed$seed"
      done
      ;;
    cdcgan)
      section cdcgan 150 "${train[@]}" recipes/mnist_cdcgan.yaml "${settings[@]}" \
        output_dir=/tmp/gankit-cdcgan train.steps=10000 eval.every=10000 eval.n=10000
      keep /tmp/gankit-cdcgan cdcgan
      ;;
  esac
done
pack
