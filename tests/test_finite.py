import pytest
import torch

from fewshot_sdk.finite import all_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_a_single_nan_or_infinity_anywhere_is_found(dtype):
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.rand(3, 1, 5, 7, dtype=dtype)
        assert all_finite(x)
        x[2, 0, 4, 6] = bad
        assert not all_finite(x), bad
    opposite = torch.zeros(9, dtype=dtype)
    opposite[1], opposite[7] = float("inf"), -float("inf")  # their sum is NaN, but so must the answer be False
    assert not all_finite(opposite)


def test_huge_finite_values_whose_sum_overflows_are_still_finite():
    # the one case where the sum's verdict is wrong: the element-wise check decides
    huge = torch.full((10,), 3e38)
    assert not torch.isfinite(huge.sum()) and all_finite(huge)
    assert all_finite(torch.full((10,), 6e4, dtype=torch.float16))  # summed in float32, no overflow


def test_integer_empty_and_complex_tensors():
    assert all_finite(torch.arange(5)) and all_finite(torch.empty(0)) and all_finite(torch.ones(2, dtype=torch.bool))
    assert all_finite(torch.tensor([1 + 2j])) and not all_finite(torch.tensor([complex(1, float("nan"))]))
