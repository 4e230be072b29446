#!/usr/bin/env bash
# Fill .gpu-carry/ (git-ignored through .git/info/exclude) with what benchmarks/gpu.sh needs on the device machine
# and cannot fetch there (it reaches no registry, and ../shared does not travel):
#   .gpu-carry/wheels/   pydantic and its needs, at this venv's versions, for the image's Python 3.12 (x86-64);
#                        the image has torch, triton, numpy, pillow, typer, rich, safetensors, onnx, pytest, hypothesis
#   .gpu-carry/omniglot/ Omniglot's minimal background zips and Lake's runs (about 3.3 MB), for MAML and training
# Run it here, once per checkout, then start the GPU run with the device tool:
#   run(command="bash benchmarks/gpu.sh", carry=[".gpu-carry"], timeout_s=540)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
python=${PYTHON:-python3}
carry=.gpu-carry

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF "/$carry/" "$exclude" 2>/dev/null || echo "/$carry/" >>"$exclude"
mkdir -p "$carry/wheels" "$carry/omniglot"

pins=$("$python" -c '
from importlib.metadata import version
names = ("pydantic", "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions")
print(" ".join(f"{name}=={version(name)}" for name in names))')
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
# shellcheck disable=SC2086  # $pins is a list of requirement words
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$carry/wheels" $pins

for data in shared/data/omniglot ../shared/data/omniglot; do
    if [[ -f $data/images_background_small1.zip ]]; then
        cp -f "$data"/images_background_small1.zip "$data"/images_background_small2.zip "$data"/all_runs.zip \
            "$carry/omniglot/"
        break
    fi
done
[[ -f $carry/omniglot/images_background_small1.zip ]] ||
    echo "warning: no Omniglot data found in shared/ or ../shared/: the MAML part uses random images, train skips" >&2

ls "$carry/wheels"
du -sh "$carry"
echo "ready: run(command=\"bash benchmarks/gpu.sh\", carry=[\"$carry\"], timeout_s=540)"
