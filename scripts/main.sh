#!/usr/bin/env bash
# Sets everything up, then runs the main job on this machine (CUDA if present):
#  1. `sslfast bench --quick`: every op and model against its baseline -> out/bench-quick.{json,md,png}
#  2. a short pretraining run: BERT-mini, MLM + NSP, on the embedded corpus -> out/pretrain-bert-mini/
#     (metrics.jsonl, metrics.png, checkpoints/, final/ loadable by transformers); about 1.5 minutes on 2 cores.
#  3. the loop's point: that model fine-tuned on Rotten Tomatoes polarity (800 labelled snippets, 2 epochs,
#     scored on 400 validation and 400 test snippets),
#     beside the same config and tokenizer from fresh weights -> out/finetune-rt-polarity/results.{json,md,png};
#     about 2 minutes. (A 100-step pretraining on docstrings is not expected to help: see the README.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
python3 -m sslfast bench --quick --json out/bench-quick.json --markdown out/bench-quick.md \
  --plot out/bench-quick.png "$@"
echo "wrote out/bench-quick.{json,md,png}"
python3 -m sslfast pretrain --model bert --size mini --objective mlm+nsp --max-steps 100 \
  --global-batch-size 32 --max-length 128 --lr 1e-3 --warmup 0.1 --eval-every 50 --save-every 50 \
  --out out/pretrain-bert-mini --overwrite
echo "wrote out/pretrain-bert-mini/{metrics.jsonl,metrics.png,final/}"
python3 -m sslfast evaluate --model out/pretrain-bert-mini --tasks rt-polarity --seeds 1 --baseline scratch \
  --max-train-examples 800 --max-eval-examples 400 --epochs 2 --max-length 64 --lr 3e-4 \
  --out out/finetune-rt-polarity
