#!/usr/bin/env bash
# Installs the pinned requirements and builds sslfast (C++ extension included) in place.
# Idempotent: on a machine that already has them, pip installs nothing and the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -r requirements.txt
python3 -m pip install -q --disable-pip-version-check --no-build-isolation -e .
python3 -c "import sslfast; print('sslfast', sslfast.__version__, 'backends:', sslfast.available_backends())"
