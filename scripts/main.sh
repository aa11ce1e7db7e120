#!/usr/bin/env bash
# Sets everything up, then runs the main job on this machine (CUDA if present):
#  1. `sslfast bench --quick`: every op and model against its baseline -> out/bench-quick.{json,md,png}
#  2. a short pretraining run: BERT-mini, MLM + NSP, on the embedded corpus -> out/pretrain-bert-mini/
#     (metrics.jsonl, metrics.png, checkpoints/, final/ loadable by transformers); about 2 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
python3 -m sslfast bench --quick --json out/bench-quick.json --markdown out/bench-quick.md \
  --plot out/bench-quick.png "$@"
echo "wrote out/bench-quick.{json,md,png}"
python3 -m sslfast pretrain --model bert --size mini --objective mlm+nsp --max-steps 150 \
  --global-batch-size 32 --max-length 128 --lr 1e-3 --warmup 0.1 --eval-every 50 --save-every 50 \
  --out out/pretrain-bert-mini --overwrite
echo "wrote out/pretrain-bert-mini/{metrics.jsonl,metrics.png,final/}"
