#!/usr/bin/env bash
# bash benchmarks/gpu_check.sh: the device check of DADAM on a fresh GPU machine, from the repository root.
#
# Needs: python3 with torch (CUDA), triton and timm; no network. Optional wheels in .whl/ (kornia, pydicom, pytest
# and its dependencies; /.whl/ is git-ignored) are installed for this run only, into a folder under /tmp.
# Steps (each under its own time limit, all within BUDGET seconds, 470 by default: the whole check fits 8 minutes):
#   env       versions, the GPU, what Triton's launcher build needs (a C compiler, Python.h)
#   dadam     DADAM at B=256, 3x448 float32 and 1x448 uint8, out of place and in place, against the clone; the
#             backend; host syncs (first call of a fresh module, later call); launches, syncs and device time per
#             forward (torch.profiler); the host's time to issue a call
#   fpsm      a TResNet-L FPSM step (B=64, 448, bf16) with and without DADAM, timed as pipelined blocks
#   bigbatch  1024x3x1024x1024 uint8 (more than 2**31 elements): the kernels against each other and the CPU loop
#   pytest    pytest -m gpu on the test files that hold GPU tests (--continue-on-collection-errors)
#   summary   the issue's targets with PASS / MISS
# Output in $OUT (default gpu_out): <step>.json and <step>.log per step, pytest_gpu.xml, steps.txt (exit status and
# seconds of each step) and summary.txt. Without CUDA every GPU step is skipped at once ("skipped: no CUDA").
# Knobs: OUT=dir, BUDGET=seconds, SKIP="fpsm bigbatch ...", PY=python.
set -uo pipefail
T0=$SECONDS
BUDGET=${BUDGET:-470}
SKIP=${SKIP:-}
PY=${PY:-python3}
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/dadam_gpu_check_triton}
: >"$OUT/steps.txt"
status=0

left() { echo $((BUDGET - (SECONDS - T0))); }
note() { echo "$*" | tee -a "$OUT/steps.txt"; }
step() { # step NAME LIMIT_S CMD...: run under min(LIMIT, time left - 20 s), log to $OUT/NAME.log, record status
    local name=$1 limit=$2 t0=$SECONDS rc rem
    shift 2
    case " $SKIP " in *" $name "*) note "=== $name: skipped (SKIP)"; return ;; esac
    rem=$(($(left) - 20))
    [ "$rem" -lt "$limit" ] && limit=$rem
    if [ "$limit" -lt 15 ]; then note "=== $name: skipped (out of time)"; status=1; return; fi
    echo "=== $name (limit ${limit}s, $(left)s left)"
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    tail -n 15 "$OUT/$name.log"
    [ "$rc" -eq 0 ] || status=1
    note "=== $name: exit $rc$([ "$rc" -ge 124 ] && echo ' (time limit)') after $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- environment (nothing is downloaded)
SITE=/tmp/dadam_gpu_check_site
mkdir -p "$SITE"
if compgen -G ".whl/*.whl" >/dev/null; then # install only what this interpreter lacks
    for spec in kornia_rs:kornia-rs kornia:kornia pydicom:pydicom pytest:pytest pluggy:pluggy iniconfig:iniconfig \
        packaging:packaging pygments:pygments; do
        IFS=: read -r mod pkg <<<"$spec"
        $PY -c "import $mod" 2>/dev/null && continue
        $PY -m pip install -q --no-index --no-deps --no-compile --find-links .whl --target "$SITE" "$pkg" \
            >>"$OUT/pip.log" 2>&1 || echo "wheel $pkg not installed (see pip.log)" >>"$OUT/steps.txt"
    done
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
# Triton links its launcher against libcuda.so.1: point it at the driver when ldconfig does not know it
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
    for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/local/cuda/compat; do
        [ -e "$d/libcuda.so.1" ] && export TRITON_LIBCUDA_PATH=$d && break
    done
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$OUT/nvidia-smi.txt" 2>&1
step env 60 $PY -m benchmarks.gpu_check env
CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)

gpu_step() { # gpu_step NAME LIMIT_S CMD...: a step that needs CUDA
    if [ "$CUDA" != 1 ]; then
        note "=== $1: skipped: no CUDA"
        [ "$1" = pytest ] || echo '{"skipped": "no CUDA"}' >"$OUT/$1.json"
        return
    fi
    step "$@"
}

# ---------------------------------------------------------------- steps, most important first
gpu_step dadam 110 $PY -m benchmarks.gpu_check dadam
gpu_step fpsm 130 $PY -m benchmarks.gpu_check fpsm
gpu_step bigbatch 70 $PY -m benchmarks.gpu_check bigbatch
# last: the GPU tests compile each kernel variant they run (Triton), about 4 minutes on an H200 on 2026-11-27
mapfile -t GPU_TESTS < <(grep -l "pytest.mark.gpu" tests/test_*.py)
if $PY -c "import pytest" 2>/dev/null; then
    gpu_step pytest 330 $PY -m pytest -m gpu -q -p no:cacheprovider -o addopts="" -rfEs --continue-on-collection-errors \
        --durations=5 --junitxml="$OUT/pytest_gpu.xml" "${GPU_TESTS[@]}"
else
    note "=== pytest: skipped (pytest does not import; put its wheels in .whl)"
fi
$PY -m benchmarks.gpu_check summary
note "gpu_check: exit $status after $((SECONDS - T0)) s (budget ${BUDGET} s)"
exit $status
