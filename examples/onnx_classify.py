"""Classify images with a task exported by `fewshot export`, using onnxruntime, pillow and numpy alone (no torch).

    python examples/onnx_classify.py task.onnx query1.png query2.png
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = {k[8:]: v for k, v in session.get_modelmeta().custom_metadata_map.items() if k.startswith("fewshot.")}
(height, width), names = json.loads(meta["image_size"]), json.loads(meta["class_names"])
mean, std = (np.float32(json.loads(meta[key])).reshape(-1, 1, 1) for key in ("mean", "std"))
for path in sys.argv[2:]:
    image = Image.open(path).convert("L" if meta["channels"] == "1" else "RGB")
    x = np.asarray(image.resize((width, height), Image.BILINEAR, reducing_gap=None), np.float32) / 255
    x = ((x[None] if x.ndim == 2 else x.transpose(2, 0, 1)) - mean) / std
    probs = session.run(["probs"], {"images": x[None]})[0][0]
    print(f"{path}: {names[probs.argmax()]} ({probs.max():.3f})")
