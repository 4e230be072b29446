"""The one check of predict's options, shared by the torch task, the onnxruntime task and OnnxClassifier."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.errors import InputError
from fewshot_sdk.export.runtime import OnnxClassifier
from fewshot_sdk.predict_options import check_batch_size, check_reject, resolve_threshold

BAD_REJECTS = ["sometimes", float("nan"), float("inf"), -float("inf"), True, [1.0], 10**400, object()]


@pytest.mark.parametrize("good", [None, "auto", 0, -3, 2.5])
def test_none_auto_and_finite_numbers_pass(good):
    check_reject(good)


@pytest.mark.parametrize("bad", BAD_REJECTS)
def test_anything_else_is_one_line_naming_where_the_calibrated_threshold_is(bad):
    with pytest.raises(InputError, match=r"reject must be None, 'auto' or a finite .*see task\.novelty_threshold"):
        check_reject(bad)
    with pytest.raises(InputError, match=r"see x\.threshold for the calibrated one"):
        check_reject(bad, "x.threshold")


def test_the_threshold_is_resolved_and_auto_calibrates_only_when_asked():
    def calibrated() -> float:
        raise AssertionError("calibrated without reject='auto'")

    assert resolve_threshold(None, calibrated) is None
    assert resolve_threshold(3, calibrated) == 3.0 and isinstance(resolve_threshold(3, calibrated), float)
    assert resolve_threshold("auto", lambda: 1.5) == 1.5


@pytest.mark.parametrize("bad", [0, -1, 2.5, "8", True, None])
def test_batch_size_is_a_whole_number_from_one(bad):
    with pytest.raises(InputError, match="batch_size must be a whole number >= 1"):
        check_batch_size(bad)
    assert check_batch_size(1) == 1


def test_every_runtime_refuses_a_bad_reject_and_batch_size_alike(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2])
    task = fs.create("protonet").adapt(fs.SupportSet.from_tensors(x, y))
    folder = task.save(tmp_path / "task", onnx=True)
    deployed = fs.load_task(folder, runtime="onnxruntime")
    query = torch.zeros(1, 1, 28, 28)
    for predict in (task.predict, deployed.predict):
        with pytest.raises(InputError, match=r"^reject must be .*got 'often'; see task\.novelty_threshold"):
            predict(query, reject="often")
        with pytest.raises(InputError, match="^batch_size must be a whole number >= 1, got 0$"):
            predict(query, batch_size=0)
    classifier = OnnxClassifier(folder / "task.onnx")
    with pytest.raises(InputError, match=r"^reject must be .*got 'often'; see classifier\.metadata\.novelty_thr"):
        classifier.classify([query[0, 0].numpy()], reject="often")
    with pytest.raises(InputError, match="^batch_size must be"):
        classifier.classify([query[0, 0].numpy()], batch_size=0)


def test_the_check_imports_no_torch():
    probe = "import sys, fewshot_sdk.predict_options; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"
