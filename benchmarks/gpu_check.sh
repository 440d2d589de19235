#!/usr/bin/env bash
# The one prepared device check for a session that is lent a GPU: the CUDA tests, then the benchmark, in one call.
#
#   Here, once:  echo /.whl/ >> .git/info/exclude
#                python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#                    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#                    -d .whl kornia==0.9.0 kornia-rs==0.2.0 pydicom
#   Device run:  bash benchmarks/gpu_check.sh      (carry .whl; results land in $OUT, default ./gpu_out)
#
# The GPU image has torch, torchvision, timm, triton, pandas, pytest; kornia and pydicom travel as wheels and DALI
# (199 MB) cannot, so its rows are skipped there.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
status=0
timeout 240 python3 -m pytest -m gpu -q -p no:cacheprovider -o addopts="" tests 2>&1 | tee "$OUT/pytest_gpu.log" || status=1
timeout 300 python3 benchmarks/throughput.py --device cuda --json "$OUT/throughput.json" --png "$OUT/throughput.png" \
    2>&1 | tee "$OUT/throughput.txt" || status=1
exit $status
