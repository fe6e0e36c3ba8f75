#!/usr/bin/env bash
# The GPU check: run from the source tree (no install) on a GPU machine, in one call of at most ~5 minutes.
#
#   bash benchmarks/gpu_check.sh [REPORT_DIR]          # default: $OUT/gpu_check, else benchmarks/results/gpu_check
#   bash benchmarks/gpu_check.sh --cpu-only DIR        # the CPU parts at tiny sizes (tests/test_gpu_check.py runs it)
#
# It writes one report folder: env.txt (versions, device, which optional modules are present), imports.txt (the
# core, the bundled sample and a trial work without datasets/diffusers/papermill/ray), cuda_tests.txt (pytest -m
# cuda), throughput.txt (fit on cnn/resnet18/vit, the pixel and latent diffusion generators), stacked.txt
# (benchmarks/stacked_throughput.py: K = 1, 8, 32, 128 stacked CNNs against one at a time), concurrent.txt (32
# trials one at a time in 1, 4, 8, 16 processes sharing the GPU, as Ray's fractional GPUs run them), grid.txt and grid/
# (a small CNN grid through the runner, stacked on CUDA), and summary.txt (each part's status and seconds).
# Data: the bundled sample, or the folder in MRI_SYNTH_DATA. diffusers is absent on the GPU machines: a wheel put in
# benchmarks/wheels/ (git-ignored; benchmarks/gpu_wheels.sh downloads it) is installed --no-deps into the report
# folder; without one the diffusion part is skipped with a note. A part that fails is recorded and the rest go on.
set -u
cd "$(dirname "$0")/.."
CPU_ONLY=0
if [ "${1:-}" = "--cpu-only" ]; then CPU_ONLY=1; shift; fi
REPORT="${1:-${OUT:+$OUT/gpu_check}}"
REPORT="${REPORT:-benchmarks/results/gpu_check}"
mkdir -p "$REPORT"
REPORT="$(cd "$REPORT" && pwd)"
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MRI_SYNTH_CACHE="${MRI_SYNTH_CACHE:-$REPORT/cache}" MRI_SYNTH_RESULTS="$REPORT/results"
export MRI_SYNTH_FIGURES="$REPORT/figures" PYTHONUNBUFFERED=1
SUMMARY="$REPORT/summary.txt"
: > "$SUMMARY"

part() {  # part NAME SECONDS COMMAND...: run with a time limit, log to NAME.log, record status and time
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$REPORT/$name.log" 2>&1
    local status=$?
    local verdict=ok; [ $status -eq 124 ] && verdict="timed out after ${limit}s"; [ $status -ne 0 ] && [ $status -ne 124 ] && verdict="failed ($status)"
    echo "$name: $verdict in $((SECONDS - start)) s" | tee -a "$SUMMARY"
}

if [ $CPU_ONLY -eq 1 ]; then
    DEVICE=cpu; QUICK=--quick
else
    DEVICE=cuda; QUICK=
    if ! $PY -c 'import diffusers' 2>/dev/null && ls benchmarks/wheels/*.whl >/dev/null 2>&1; then
        # only the wheels whose module is missing: the machine's own packages are never shadowed
        MISSING=$($PY -c 'import importlib.util, pathlib, sys
for w in sorted(pathlib.Path("benchmarks/wheels").glob("*.whl")):
    name = w.name.split("-")[0].lower().replace("-", "_")
    if importlib.util.find_spec(name) is None: print(w)')
        if [ -n "$MISSING" ]; then
            part install_wheels 60 $PY -m pip install --no-deps --no-index --target "$REPORT/site" $MISSING
            export PYTHONPATH="$PYTHONPATH:$REPORT/site"
        fi
    fi
fi
echo "gpu_check $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown) device $DEVICE" >> "$SUMMARY"
part env 30 $PY benchmarks/gpu_check.py env --report "$REPORT" --device $DEVICE
part imports 60 $PY benchmarks/gpu_check.py imports --report "$REPORT" --device $DEVICE
if [ $CPU_ONLY -eq 0 ]; then
    part cuda_tests 60 $PY -m pytest tests/test_cuda.py -m cuda -q -p no:cacheprovider  # one file: other test modules import packages the GPU machines lack
    cp "$REPORT/cuda_tests.log" "$REPORT/cuda_tests.txt"
fi
part throughput 150 $PY benchmarks/gpu_check.py throughput --report "$REPORT" --device $DEVICE $QUICK
if [ $CPU_ONLY -eq 1 ]; then
    part stacked 120 $PY benchmarks/stacked_throughput.py --quick --rounds 1 --out "$REPORT/stacked.txt"
else
    part stacked 100 $PY benchmarks/stacked_throughput.py --device cuda --ks 1,8,32,128 --steps 30 --rounds 1 \
        --out "$REPORT/stacked.txt"
fi
if [ $CPU_ONLY -eq 1 ]; then
    part concurrent 120 $PY benchmarks/gpu_check.py concurrent --report "$REPORT" --device $DEVICE --quick --total 4 \
        --procs-list 1,2
else
    part concurrent 120 $PY benchmarks/gpu_check.py concurrent --report "$REPORT" --device $DEVICE --total 32 \
        --procs-list 1,4,8,16
fi
part grid 60 $PY benchmarks/gpu_check.py grid --report "$REPORT" --device $DEVICE $QUICK
rm -rf "$REPORT/cache" "$REPORT/concurrent_runs" "$REPORT/site" "$REPORT/bank" "$REPORT/generators"  # large, and not part of the report
echo "report: $REPORT"
cat "$SUMMARY"
! grep -q "failed\|timed out" "$SUMMARY"
