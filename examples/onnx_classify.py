"""Classify images with a task exported by `fewshot export`, using onnxruntime, pillow and numpy alone (no torch).

    python examples/onnx_classify.py task.onnx query1.png query2.png

Photo models record ``resize_shorter``: scale the shorter side to it, then centre-crop the
input size (others stretch the image to it). Kept short: transparency is not composited
on white nor 16-bit images rescaled here; ``fewshot_sdk.export.runtime.OnnxClassifier``
does those too, exactly as ``task.preprocess`` does.
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = {k[8:]: v for k, v in session.get_modelmeta().custom_metadata_map.items() if k.startswith("fewshot.")}
(height, width), names = json.loads(meta["image_size"]), json.loads(meta["class_names"])
mean, std = (np.float32(json.loads(meta[key])).reshape(-1, 1, 1) for key in ("mean", "std"))
shorter, bilinear = json.loads(meta.get("resize_shorter", "null")), {"resample": Image.BILINEAR, "reducing_gap": None}
for path in sys.argv[2:]:
    image = ImageOps.exif_transpose(Image.open(path)).convert("L" if meta["channels"] == "1" else "RGB")
    if shorter:  # keep the aspect ratio: shorter side to `shorter` (at least the crop), then centre-crop
        scale = max(shorter / min(image.size), width / image.width, height / image.height)
        image = image.resize((round(image.width * scale), round(image.height * scale)), **bilinear)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        image = image.crop((left, top, left + width, top + height))
    x = np.asarray(image.resize((width, height), **bilinear), np.float32) / 255
    x = ((x[None] if x.ndim == 2 else x.transpose(2, 0, 1)) - mean) / std
    probs = session.run(["probs"], {"images": x[None]})[0][0]
    print(f"{path}: {names[probs.argmax()]} ({probs.max():.3f})")
