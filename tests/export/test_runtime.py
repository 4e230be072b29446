"""The torch-free runtime: numpy preprocessing, providers, refusals, and running without torch at all."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import fewshot_sdk as fs
from fewshot_sdk.errors import InputError
from fewshot_sdk.export import metadata as metadata_module
from fewshot_sdk.export import runtime
from fewshot_sdk.export.metadata import OnnxMetadata
from fewshot_sdk.export.runtime import OnnxClassifier, choose_providers, preprocess

REPO = Path(__file__).resolve().parents[2]
# Runs with ``import torch`` made impossible; the package's __init__ files (which import torch for the
# torch API) are bypassed so that only runtime.py and what it imports are exercised.
TORCH_FREE = """
import sys, types
sys.modules["torch"] = None
for name, path in (("fewshot_sdk", {root!r}), ("fewshot_sdk.export", {root!r} + "/export")):
    package = types.ModuleType(name)
    package.__path__ = [path]
    sys.modules[name] = package
"""


def metadata_for(learner: fs.Learner) -> OnnxMetadata:
    return OnnxMetadata.describing(learner.method, ("a", "b"), learner.preprocess_config, fs.__version__)


@pytest.fixture(scope="module")
def real_images(examples_dir):
    """Real Omniglot glyphs (1-bit PNGs) plus the same glyphs as RGBA with transparency and as a palette image."""
    paths = sorted((examples_dir / "queries").glob("*.png")) + sorted((examples_dir / "support").glob("*/*_01.png"))
    glyph = Image.open(paths[0])
    rgba = glyph.convert("RGBA")
    rgba.putalpha(Image.fromarray((np.asarray(glyph.convert("L")) < 128).astype(np.uint8) * 200))
    tinted = Image.merge("RGB", [glyph.convert("L"), glyph.convert("L").point(lambda v: v // 2), glyph.convert("L")])
    return [*paths, rgba, tinted, tinted.convert("P")]


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"image_size": 84, "channels": 3, "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3)},
        {"image_size": (20, 36), "channels": 1, "mean": (0.1,), "std": (0.7,)},
        {"preprocess": {"image_size": (24, 30), "channels": 3, "resize_shorter": 33}},
    ],
)
def test_numpy_preprocessing_equals_the_torch_preprocess(real_images, settings):
    learner = fs.create("protonet", **settings)
    expected = learner.preprocess(real_images).numpy()
    got = preprocess(real_images, metadata_for(learner))
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-6


@pytest.fixture(scope="module")
def exported_protonet(tmp_path_factory, examples_dir):
    torch.manual_seed(0)
    task = fs.create("protonet").adapt(fs.SupportSet.from_folder(examples_dir / "support"))
    return task, task.export_onnx(tmp_path_factory.mktemp("onnx") / "protonet.onnx")


def test_classify_with_onnx_matches_predict_on_image_files(exported_protonet, examples_dir):
    task, path = exported_protonet
    queries = sorted((examples_dir / "queries").glob("*.png"))
    names, probs = runtime.classify_with_onnx(path, queries)
    assert names == list(task.class_names)
    assert np.abs(probs - task.predict(queries).probs.numpy()).max() <= 1e-4


def test_runtime_and_the_example_script_run_with_torch_unimportable(exported_protonet, examples_dir):
    task, path = exported_protonet
    queries = [str(p) for p in sorted((examples_dir / "queries").glob("*.png"))]
    prelude = TORCH_FREE.format(root=str(REPO / "fewshot_sdk"))
    runner = prelude + (
        "import json\nfrom fewshot_sdk.export.runtime import classify_with_onnx\n"
        "names, probs = classify_with_onnx(sys.argv[1], sys.argv[2:])\n"
        "print(json.dumps([names, probs.tolist()]))\n"
    )
    result = subprocess.run([sys.executable, "-c", runner, str(path), *queries], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no provider warning on a machine where CUDA cannot run
    names, probs = json.loads(result.stdout)
    expected = task.predict(queries)
    assert names == list(task.class_names)
    assert np.abs(np.array(probs) - expected.probs.numpy()).max() <= 1e-4

    script = "import sys\nsys.modules['torch'] = None\nimport runpy\nsys.argv = sys.argv[1:]\n"
    script += "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    example = REPO / "examples" / "onnx_classify.py"
    result = subprocess.run(
        [sys.executable, "-c", script, str(example), str(path), *queries], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(": ")[1].split(" (")[0] for line in lines] == expected.class_names


def test_providers_ask_for_cuda_only_when_it_can_run(monkeypatch):
    import onnxruntime

    listed = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    usable = listed and runtime.cuda_usable()
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers() == (both if usable else ["CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: both)
    monkeypatch.setattr(runtime, "cuda_usable", lambda: False)
    assert choose_providers() == ["CPUExecutionProvider"]
    monkeypatch.setattr(runtime, "cuda_usable", lambda: True)
    assert choose_providers() == both
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert choose_providers() == ["CPUExecutionProvider"]


class FakeDriver:
    """libcuda's two entry points the check calls, with a chosen device count."""

    def __init__(self, devices: int) -> None:
        self.devices = devices

    def cuInit(self, flags):
        return 0

    def cuDeviceGetCount(self, pointer):
        pointer._obj.value = self.devices
        return 0


@pytest.mark.parametrize(
    ("devices", "missing", "usable"),
    [(1, "libcuda.so.1", False), (0, "", False), (1, "providers_cuda", False), (1, "libcudnn", False), (1, "", True)],
)
def test_cuda_check_needs_a_gpu_and_every_library(monkeypatch, devices, missing, usable):
    import ctypes

    monkeypatch.setattr(sys, "platform", "linux")

    def fake_cdll(name):
        if missing and missing in str(name):  # e.g. the provider library, when libcublasLt.so.13 is absent
            raise OSError(f"{name}: cannot open shared object file")
        return FakeDriver(devices) if name == "libcuda.so.1" else object()

    monkeypatch.setattr(ctypes, "CDLL", fake_cdll)
    runtime.cuda_usable.cache_clear()
    try:
        assert runtime.cuda_usable() is usable
    finally:
        runtime.cuda_usable.cache_clear()


def test_files_that_are_not_our_exports_are_refused(tmp_path, exported_protonet):
    _, path = exported_protonet
    with pytest.raises(InputError, match="ONNX model not found"):
        OnnxClassifier(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_text("not a protobuf")
    with pytest.raises(InputError, match=r"cannot load ONNX model .*corrupt\.onnx"):
        OnnxClassifier(corrupt)
    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 28, 28])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 28, 28])],
    )
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8), foreign)
    with pytest.raises(InputError, match=r"was not exported by fewshot-sdk \(no fewshot metadata\); export it"):
        OnnxClassifier(foreign)
    classifier = OnnxClassifier(path)
    with pytest.raises(InputError, match=r"takes \[B, 1, 28, 28\]"):
        classifier.run(np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(InputError, match="finite"):
        classifier.run(np.full((1, 1, 28, 28), np.nan, np.float32))
    with pytest.raises(InputError, match="image not found"):
        classifier.predict_proba([tmp_path / "nope.png"])


def test_damaged_or_newer_metadata_is_refused():
    good = OnnxMetadata("protonet", ("a", "b"), (28, 28), 1, (0.9,), (0.2,), "0.1.0").to_props()
    assert OnnxMetadata.from_props(good, "m.onnx").class_names == ("a", "b")
    with pytest.raises(InputError, match="damaged fewshot metadata"):
        OnnxMetadata.from_props({**good, "fewshot.image_size": "[28"}, "m.onnx")
    with pytest.raises(InputError, match="upgrade fewshot-sdk"):
        OnnxMetadata.from_props({**good, "fewshot.format_version": "99"}, "m.onnx")
    with pytest.raises(InputError, match="unusable fewshot metadata: std"):
        OnnxMetadata.from_props({**good, "fewshot.std": "[-1]"}, "m.onnx")


def test_metadata_round_trips_with_and_without_a_centre_crop():
    stretch = OnnxMetadata("protonet", ("a", "b"), (28, 28), 1, (0.9,), (0.2,), "0.1.0")
    props = stretch.to_props()
    assert props["fewshot.resize_shorter"] == "null" and props["fewshot.format_version"] == "1"
    assert OnnxMetadata.from_props(props, "m.onnx") == stretch
    crop = OnnxMetadata("protonet", ("cat", "dog"), (224, 224), 3, (0.5,), (0.5,), "0.1.0", resize_shorter=256)
    props = crop.to_props()
    # version 2: an SDK that knows only version 1 would ignore the key and stretch; it must refuse instead
    assert props["fewshot.resize_shorter"] == "256" and props["fewshot.format_version"] == "2"
    read = OnnxMetadata.from_props(props, "m.onnx")
    assert read == crop and read.resize_shorter == 256 and read.format_version == 2


def test_files_written_before_resize_shorter_existed_still_open_and_stretch():
    old = OnnxMetadata("protonet", ("a", "b"), (28, 28), 1, (0.9,), (0.2,), "0.1.0").to_props()
    del old["fewshot.resize_shorter"]
    read = OnnxMetadata.from_props(old, "old.onnx")
    assert read.resize_shorter is None and read.format_version == 1


def test_an_sdk_that_reads_only_version_1_refuses_a_cropping_file(monkeypatch):
    crop = OnnxMetadata("protonet", ("a", "b"), (24, 24), 3, (0.5,), (0.5,), "0.1.0", resize_shorter=28).to_props()
    monkeypatch.setattr(metadata_module, "FORMAT_VERSION", 1)  # what the previous release's reader compares with
    with pytest.raises(InputError, match="version 2, newer than this SDK reads \\(1\\); upgrade fewshot-sdk"):
        OnnxMetadata.from_props(crop, "new.onnx")


@pytest.mark.parametrize("value", ["256.5", "true", '"256"', "0"])
def test_a_damaged_resize_shorter_is_refused(value):
    props = OnnxMetadata("protonet", ("a",), (24, 24), 3, (0.5,), (0.5,), "0.1.0", resize_shorter=28).to_props()
    with pytest.raises(InputError, match="m.onnx has (damaged|unusable) fewshot metadata"):
        OnnxMetadata.from_props({**props, "fewshot.resize_shorter": value}, "m.onnx")
    stretch = OnnxMetadata("protonet", ("a",), (24, 24), 3, (0.5,), (0.5,), "0.1.0").to_props()
    with pytest.raises(InputError, match="damaged fewshot metadata .*version-1 file"):  # a crop claimed by a v1 file
        OnnxMetadata.from_props({**stretch, "fewshot.resize_shorter": "28"}, "m.onnx")


def photo_files(folder: Path) -> list[Path]:
    """Non-square RGB photos of odd sizes, one stored sideways with an EXIF Orientation tag."""
    rng = np.random.default_rng(3)
    paths = []
    for index, (width, height) in enumerate([(61, 37), (29, 83), (40, 40)]):
        smooth = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((width, height))
        paths.append(folder / f"photo{index}.png")
        smooth.save(paths[-1])
    exif = Image.Exif()
    exif[0x0112] = 8
    paths.append(folder / "phone.jpg")
    Image.open(paths[0]).save(paths[-1], quality=95, exif=exif)
    return paths


class FakeSession:
    """Enough of ``onnxruntime.InferenceSession`` for the example script; records the batches fed to it."""

    props: ClassVar[dict[str, str]] = {}
    fed: ClassVar[list[np.ndarray]] = []

    def __init__(self, path, providers):
        pass

    def get_modelmeta(self):
        return types.SimpleNamespace(custom_metadata_map=self.props)

    def run(self, outputs, feed):
        self.fed.append(feed["images"])
        return [np.array([[0.25, 0.75]], np.float32)]


@pytest.mark.parametrize("resize_shorter", [None, 30])
def test_the_example_script_preprocesses_like_the_sdk(tmp_path, monkeypatch, capsys, resize_shorter):
    metadata = OnnxMetadata(
        "protonet", ("a", "b"), (24, 27), 3, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4), "0", resize_shorter=resize_shorter
    )
    paths = photo_files(tmp_path)
    monkeypatch.setattr(FakeSession, "props", metadata.to_props())
    monkeypatch.setattr(FakeSession, "fed", [])
    monkeypatch.setitem(sys.modules, "onnxruntime", types.SimpleNamespace(InferenceSession=FakeSession))
    monkeypatch.setattr(sys, "argv", ["onnx_classify.py", "task.onnx", *map(str, paths)])
    runpy.run_path(str(REPO / "examples" / "onnx_classify.py"), run_name="__main__")
    assert capsys.readouterr().out.count(": b (0.750)") == len(paths)
    fed = np.concatenate(FakeSession.fed)
    assert np.abs(fed - preprocess(paths, metadata)).max() < 1e-6


def test_an_exported_photo_task_crops_like_torch(tmp_path, examples_dir):
    torch.manual_seed(0)
    preprocess_settings = {"image_size": (20, 24), "channels": 3, "resize_shorter": 26, "mean": (0.5,), "std": (0.5,)}
    learner = fs.create("protonet", preprocess=preprocess_settings)
    photos = photo_files(tmp_path)
    task = learner.adapt(fs.SupportSet.from_mapping({"first": photos[:2], "second": photos[2:]}))
    path = task.export_onnx(tmp_path / "photos.onnx")
    classifier = OnnxClassifier(path)
    assert classifier.metadata.resize_shorter == 26 and classifier.metadata.format_version == 2
    assert np.abs(classifier.preprocess(photos) - task.preprocess(photos).numpy()).max() < 1e-6
    assert np.abs(classifier.predict_proba(photos) - task.predict(photos).probs.numpy()).max() <= 1e-4
