#!/usr/bin/env bash
# The GPU run, ready to go: on a CUDA machine, within 8 minutes, the kernel tests on the GPU, the fused kernels
# against torch eager with their roofline, MAML adaptation with and without a CUDA graph, photo embedding
# throughput, a one-rank NCCL group and a 1-GPU training smoke; one Markdown table, printed and written to
# benchmarks/results/gpu_<device>.md (and to $OUT with the logs, where $OUT is set).
#
#   bash benchmarks/gpu.sh               # on a GPU machine (exit 0: all parts ok, 1: a part failed)
#   bash benchmarks/gpu.sh --cpu-check   # anywhere: every code path on the CPU, tiny sizes (~15 s)
#   bash benchmarks/gpu.sh --parts kernels,maml --budget 200
#
# Without a GPU it refuses at once: exit 2 and one line on stderr, before importing anything.
# Python: $PYTHON, else python3. The package need not be installed: the repository goes on PYTHONPATH. Packages the
# machine lacks (the device image has no pydantic) are installed from .gpu-carry/wheels when present:
# benchmarks/speed/gpu_prepare.sh fills .gpu-carry (wheels and Omniglot's minimal zips) for the device tool's carry.
# The driver is benchmarks/speed/gpu_run.py (its docstring says what each part measures).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
python=${PYTHON:-python3}

refuse() {
    echo "error: no CUDA device: benchmarks/gpu.sh needs a GPU ($1)" >&2
    exit 2
}

cpu_check=0
for arg in "$@"; do
    case $arg in
        --cpu-check) cpu_check=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
    esac
done

if [[ $cpu_check == 0 ]]; then
    # Cheap checks first (no Python): visible devices, then the driver's own view.
    case ${CUDA_VISIBLE_DEVICES-unset} in
        "" | -1) refuse "CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES}' hides every GPU" ;;
    esac
    if command -v nvidia-smi >/dev/null 2>&1; then
        listing=$(timeout 30 nvidia-smi -L 2>&1 || true)
        if ! grep -q '^GPU ' <<<"$listing"; then
            refuse "nvidia-smi lists no GPU: $(head -n 1 <<<"$listing")"
        fi
    elif ! compgen -G '/dev/nvidia[0-9]*' >/dev/null; then
        refuse "no nvidia-smi and no /dev/nvidia* device on ${HOSTNAME:-this machine}"
    fi
fi

command -v "$python" >/dev/null 2>&1 || {
    echo "error: no Python: $python not found (set PYTHON)" >&2
    exit 3
}
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

# Packages the SDK imports; a machine image without them gets them from carried wheels.
needs='import numpy, PIL, pydantic, rich, safetensors, typer'
if ! "$python" -c "$needs" >/dev/null 2>&1; then
    shopt -s nullglob
    wheels=("$repo"/.gpu-carry/wheels/*.whl)
    shopt -u nullglob
    if ((${#wheels[@]})); then
        site=${TMPDIR:-/tmp}/fewshot-gpu-site
        echo "[gpu.sh] installing ${#wheels[@]} carried wheels into $site" >&2
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" "${wheels[@]}" >&2
        export PYTHONPATH="$site:$PYTHONPATH"
    fi
    if ! missing=$("$python" -c "$needs" 2>&1 | tail -n 1); then
        echo "[gpu.sh] warning: $missing: the parts that load models will fail (kernels and tests need only" \
            "torch and triton); run benchmarks/speed/gpu_prepare.sh here and carry .gpu-carry" >&2
    fi
fi

if [[ $cpu_check == 0 ]]; then
    # The driver's check (a CPU build of torch on a GPU machine is refused here, not after minutes).
    probe='import torch, sys; ok = torch.cuda.is_available(); print("" if ok else f"torch {torch.__version__} sees no CUDA device"); sys.exit(0 if ok else 1)'
    if ! why=$("$python" -c "$probe" 2>&1); then
        refuse "$(printf '%s\n' "$why" | tail -n 1)"
    fi
fi

exec "$python" "$repo/benchmarks/speed/gpu_run.py" "$@"
