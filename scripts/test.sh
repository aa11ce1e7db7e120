#!/usr/bin/env bash
# Sets everything up, then runs the test suite (Triton kernels through the interpreter on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m ruff check .  # lint (configured in pyproject.toml)
export TRITON_INTERPRET=1
python3 -m pytest tests "$@"
