#!/usr/bin/env bash
# Sets everything up, then runs the main job: the quick benchmark report on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m pytest benchmarks/test_bench_vq.py --benchmark-only -p no:cacheprovider "$@"
