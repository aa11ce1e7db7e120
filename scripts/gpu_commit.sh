#!/usr/bin/env bash
# Files a scripts/gpu_check.sh result folder under benchmarks/results/ as gpu-<date>-<device>-*.{json,png,log}
# and regenerates benchmarks/RESULTS.md. Usage: bash scripts/gpu_commit.sh <folder> ; then review and commit.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:?usage: gpu_commit.sh <gpu_check output folder>}
DEVICE=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['device_name'].replace(' ', '-'))" \
  "$SRC/env.json" 2>/dev/null || echo gpu)
STAMP=gpu-$(date -u +%Y-%m-%d)-$DEVICE
for f in "$SRC"/*; do
  name=$(basename "$f")
  cp "$f" "benchmarks/results/$STAMP-$name"
  echo "benchmarks/results/$STAMP-$name"
done
python3 -m sslfast.bench.results
echo "now: git add benchmarks/results/$STAMP-* benchmarks/RESULTS.md && git commit (name the device, versions, date, command)"
