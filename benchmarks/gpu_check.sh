#!/usr/bin/env bash
# The one prepared device check for a session that is lent a GPU: a preflight, the CUDA tests, then the benchmark.
#
#   Here, once:  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#                    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#                    -d .whl kornia==0.9.0 kornia-rs==0.2.0 pydicom          (/.whl/ is in .gitignore)
#   Device run:  run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
#                Results land in $OUT (default ./gpu_out): gpu.txt, preflight.txt, pytest_gpu.log / .xml,
#                throughput.txt / .json / .png, steps.txt (exit status and seconds of every step).
#
# The GPU image has torch, torchvision, timm, triton, pandas, pytest; kornia and pydicom travel as wheels and DALI
# (199 MB) cannot, so its rows and tests are skipped there. Every step runs even when an earlier one failed; the exit
# status is 1 when any step failed. Budget: preflight <= 2 min, tests <= 4 min, benchmark (--quick) <= 5 min; the
# expected total is ~3 min on an H100 (the --quick CUDA preset: 4 configs, 7 timed runs of 20 calls each).
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
status=0
step() {  # step NAME TIMEOUT_S LOG CMD...: run one step under a timeout, log it, record its status and seconds
    local name=$1 limit=$2 log=$3 t0=$SECONDS rc
    shift 3
    echo "=== $name (limit ${limit}s)" | tee -a "$OUT/steps.txt"
    timeout -k 15 "$limit" "$@" 2>&1 | tee "$OUT/$log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || status=1
    echo "=== $name: exit $rc$([ "$rc" -ge 124 ] && echo ' (timeout?)') after $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
}

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >"$OUT/pip.log" 2>&1 && export PYTHONPATH=/tmp/site || echo "wheel install failed (see pip.log)" | tee -a "$OUT/steps.txt"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"

# Preflight: versions, what Triton's launcher build needs (a C compiler and Python.h; without them every Triton launch
# fails and path="auto" on CUDA with it), then one small launch of the paste kernel checked against the loop path.
step preflight 120 preflight.txt python3 - <<'EOF'
import importlib, shutil, sys, sysconfig, os
import torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
for mod in ("triton", "torchvision", "timm", "kornia", "pandas", "numpy", "PIL", "tqdm", "safetensors", "pydicom"):
    try:
        print(f"{mod} {getattr(importlib.import_module(mod), '__version__', '?')}")
    except Exception as e:
        print(f"{mod} MISSING ({type(e).__name__}: {e})")
cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")
inc = sysconfig.get_paths()["include"]
print("C compiler:", cc, "| Python.h:", os.path.exists(os.path.join(inc, "Python.h")), inc)
print("GPU:", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
sys.path.insert(0, "tests")
from helpers import make_bank, make_images, paste_with_bank  # noqa: E402
bank = make_bank(canvas=64, min_size=3, max_size=40, seed=2)
g = torch.Generator().manual_seed(0)
pid = torch.randint(0, len(bank), (4, 1), generator=g)
h, w = bank.sizes[pid].unbind(-1)
x0, y0 = torch.randint(-10, 50, (4, 1), generator=g), torch.randint(-10, 50, (4, 1), generator=g)
slots = {"boxes": torch.stack([x0, y0, x0 + w, y0 + h], -1), "patch_ids": pid,
         "active": torch.ones(4, 1, dtype=torch.bool), "alpha": torch.tensor([[1.0], [0.5], [0.37], [1.0]])}
ok = True
for dtype in (torch.uint8, torch.float32, torch.bfloat16):
    images = make_images(4, 3, 64, dtype, channels_last=True, seed=1)
    ref = paste_with_bank(bank, images, **slots, path="loop")
    gpu = {k: v.cuda() for k, v in slots.items()}
    for path in ("vectorised", "triton"):
        try:
            out = paste_with_bank(bank.to("cuda"), images.cuda(), **gpu, path=path).cpu()
            same = torch.equal(out, ref)
            print(f"paste {path:10} {str(dtype):15} equal to loop: {same}")
            ok &= same
        except Exception as e:
            ok = False
            print(f"paste {path:10} {str(dtype):15} FAILED: {type(e).__name__}: {str(e)[:500]}")
sys.exit(0 if ok else 1)
EOF

step pytest_gpu 240 pytest_gpu.log python3 -m pytest -m gpu -q -p no:cacheprovider -o addopts="" -rfEs --durations=10 \
    --junitxml="$OUT/pytest_gpu.xml" tests
step throughput 300 throughput.txt python3 benchmarks/throughput.py --device cuda --quick --no-progress \
    --json "$OUT/throughput.json" --png "$OUT/throughput.png"
echo "gpu_check: exit $status" | tee -a "$OUT/steps.txt"
exit $status
