#!/usr/bin/env bash
# The real-data study's generator arms (issue 14) on one GPU machine, from the source tree, in one call.
#
#   bash benchmarks/real_study_gpu.sh [OUT_DIR] [SECONDS]        # default: $OUT, 480 s for the trials
#   REAL_STUDY_SPLITS=slice bash benchmarks/real_study_gpu.sh ...  # one evaluation only
#   bash benchmarks/real_study_gpu.sh --dry-run OUT_DIR           # here: the same processes on the bundled sample,
#                                                                 # toy generator, 1 repeat (tests/test_real_study_gpu.py)
#
# What it runs: one process per (evaluation, repeat), 20 at once (10 `slice` seeds, 10 `subject` seeds = 5 person
# folds x 2), each `mri-synth study` with the exact arms of profiles/real.yaml that are not finished yet (the
# control arms were run on the CPU and travel with the tree, so they are skipped): the repeat's latent-cpu
# generator is trained on the GPU from that repeat's own 30% subset, fills the bank, and the two diffusion arms
# train. `slice` processes then run the thesis-budget rows (10 epochs, no equal steps: 100%, 30%, 30% + 70%
# repeat, 30% + 70% diffusion from the same generator) into benchmarks/results/real/thesis_budget. The classifiers
# train with --precision fp32 (no bf16 autocast, no TF32), the arithmetic of the CPU-run control arms they pair
# with. Small models leave an H100 latency-bound, so 20 processes share it (3x one process for the CNN,
# benchmarks/results/gpu_check_h100).
#
# Data: the hub-layout parquet folder in MRI_SYNTH_DATA (read with pyarrow when `datasets` is absent; the
# fingerprint is the files' content, so the results folders accept it). diffusers travels as a wheel in
# benchmarks/wheels (benchmarks/gpu_wheels.sh). Everything written comes back as two tarballs in OUT_DIR:
# results.tar (new trial files of both results folders) and logs.tar, plus summary.txt.
set -u
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUTDIR="${1:-${OUT:-/tmp/real_study_gpu}}"
LIMIT="${2:-480}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
PY="${PYTHON:-python3}"
WORK="${REAL_STUDY_WORK:-/tmp/real_study_gpu}"
mkdir -p "$WORK/logs"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export MRI_SYNTH_CACHE="${MRI_SYNTH_CACHE:-$WORK/cache}"
SUMMARY="$OUTDIR/summary.txt"
echo "real_study_gpu $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null) dry_run=$DRY" > "$SUMMARY"

if [ $DRY -eq 0 ] && ! $PY -c 'import diffusers' 2>/dev/null; then
    MISSING=$($PY -c 'import importlib.util, pathlib
for w in sorted(pathlib.Path("benchmarks/wheels").glob("*.whl")):
    if importlib.util.find_spec(w.name.split("-")[0].lower()) is None: print(w)')
    $PY -m pip install -q --no-deps --no-index --target "$WORK/site" $MISSING >> "$SUMMARY" 2>&1
    export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi

if [ $DRY -eq 1 ]; then
    DATA=sample; SEEDS="0"; SPLITS="slice"; PRESET=latent-toy; EPOCHS=1; TB_EPOCHS=1
    RESULTS="$WORK/results/real"; TB_RESULTS="$WORK/results/thesis_budget"
else
    DATA="${MRI_SYNTH_DATA:?set MRI_SYNTH_DATA to the hub-layout folder}"; SEEDS="0 1 2 3 4 5 6 7 8 9"
    SPLITS="${REAL_STUDY_SPLITS:-slice subject}"; PRESET=latent-cpu; EPOCHS=5; TB_EPOCHS=10
    RESULTS=benchmarks/results/real/results; TB_RESULTS=benchmarks/results/real/thesis_budget
fi
# the study's frozen settings (profiles/real.yaml); --device cuda fails loudly where no GPU is seen
DEVICE=cuda; [ $DRY -eq 1 ] && DEVICE=cpu
COMMON=(--arch cnn --data "$DATA" --batch-size 64 --lr 0.001 --weight-decay 0.0 --diffusion-preset $PRESET
        --device $DEVICE --cpu-threads 1 --precision fp32)
BEFORE="$WORK/before.txt"
find "$RESULTS" "$TB_RESULTS" -name '*.json' 2>/dev/null | sort > "$BEFORE"

start=$SECONDS
# decode the data and recover its people once, so the processes read the cache instead of 20 decodes at once
$PY -c "from mri_synth.data.cache import load_data; d = load_data('$DATA'); print(d.source, d.fingerprint, len(d.train.ids))" \
    >> "$SUMMARY" 2>&1 || { echo "data: failed" >> "$SUMMARY"; cat "$SUMMARY"; exit 1; }
echo "data ready in $((SECONDS - start)) s" >> "$SUMMARY"

run_repeat() {  # run_repeat SPLIT SEED: the repeat's generator arms, then (slice) its thesis-budget rows
    local split=$1 seed=$2
    $PY -m mri_synth.cli study "${COMMON[@]}" --fractions 1.0 0.3 \
        --arms diffusion "diffusion:Mild_Demented,Moderate_Demented" --seeds 1 --first-seed "$seed" \
        --epochs $EPOCHS --equal-steps --split "$split" --results "$RESULTS" || return 1
    if [ "$split" = slice ]; then
        $PY -m mri_synth.cli study "${COMMON[@]}" --fractions 1.0 0.3 --arms none repeat diffusion --seeds 1 \
            --first-seed "$seed" --epochs $TB_EPOCHS --split slice --results "$TB_RESULTS" || return 1
    fi
}

pids=()
for split in $SPLITS; do
    for seed in $SEEDS; do
        (run_repeat "$split" "$seed" > "$WORK/logs/${split}_${seed}.log" 2>&1; echo "$split $seed exit $?" \
            >> "$WORK/logs/status.txt") &
        pids+=($!)
    done
done
# stop at the limit, keeping every finished trial (each is written atomically as it finishes)
deadline=$((SECONDS + LIMIT))
(while [ $SECONDS -lt $deadline ]; do sleep 2; done  # short sleeps: killed below, it holds no pipe for long
 echo "limit ${LIMIT}s reached: stopping the rest" >> "$SUMMARY"; pkill -f "mri_synth.cli study") > /dev/null 2>&1 &
watchdog=$!
wait "${pids[@]}"
kill $watchdog 2>/dev/null
echo "trials done in $((SECONDS - start)) s" >> "$SUMMARY"
sort "$WORK/logs/status.txt" >> "$SUMMARY" 2>/dev/null

find "$RESULTS" "$TB_RESULTS" -name '*.json' 2>/dev/null | sort > "$WORK/after.txt"
comm -13 "$BEFORE" "$WORK/after.txt" > "$WORK/new.txt"
# a trial counts once its .json is written; its .npz is written first
sed 's/\.json$/.npz/' "$WORK/new.txt" | grep '/trials/' > "$WORK/new_npz.txt"
cat "$WORK/new.txt" "$WORK/new_npz.txt" | xargs -r ls -d 2>/dev/null | tar -cf "$OUTDIR/results.tar" -T -
echo "new result files: $(wc -l < "$WORK/new.txt") json" >> "$SUMMARY"
for g in "$MRI_SYNTH_CACHE"/diffusion/*/generator.json; do  # each generator's settings, seconds and losses
    [ -f "$g" ] && cp "$g" "$WORK/logs/generator_$(basename "$(dirname "$g")").json"
done
echo "generators trained: $(ls "$MRI_SYNTH_CACHE"/diffusion 2>/dev/null | wc -l)" >> "$SUMMARY"
tar -cf "$OUTDIR/logs.tar" -C "$WORK" logs
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >> "$SUMMARY" 2>/dev/null
cat "$SUMMARY"
! grep -q "exit [^0]" "$WORK/logs/status.txt"
