#!/usr/bin/env bash
# Sets everything up, then runs the main job: `sslfast bench --quick` on this machine (CUDA if present),
# writing the table, JSON, Markdown and a plot into out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
python3 -m sslfast bench --quick --json out/bench-quick.json --markdown out/bench-quick.md \
  --plot out/bench-quick.png "$@"
echo "wrote out/bench-quick.{json,md,png}"
