"""Dropout's keep scale ``1 / (1 - p)`` is exact in the tensor's own dtype.

Issue 23: comparing a float64 training step with the official code showed
gradients 9.5e-4 apart with dropout on (p = 0.1, nothing dropped), because the
scale was rounded to float32 (4.8e-8 off) before the cast to float64.
"""
import pytest
import torch

from cdetr_mmdet.speedups.dropout import dropout, keep_scale_mask

CPU = torch.device('cpu')


@pytest.mark.parametrize('p', [0.1, 0.3, 1 / 3])
def test_float64_mask_scale_is_the_float64_value(p):
    torch.manual_seed(0)
    mask = keep_scale_mask(torch.Size((64, 64)), p, torch.float64, CPU)
    assert mask.dtype == torch.float64
    kept = mask[mask != 0]
    assert kept.numel() > 0
    # Exactly the double 1 / (1 - p), not float32's rounding of it.
    assert kept.unique().tolist() == [1. / (1. - p)]


def test_float64_dropout_without_drops_equals_the_exact_scaling():
    """p tiny (~1e-9: nothing dropped), so every element is x / (1 - p)."""
    torch.manual_seed(0)
    x = torch.randn(32, 32, dtype=torch.float64)
    p = 1e-9
    out = dropout(x, p, training=True)
    assert (out != 0).all()
    torch.testing.assert_close(out, x * (1. / (1. - p)), rtol=0, atol=0)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16,
                                   torch.float16])
def test_lower_precision_scale_is_the_rounded_value(dtype):
    """In float32/bf16/fp16 the kept value is 1 / (1 - p) rounded once to the
    dtype (float32: the value the masks always had)."""
    torch.manual_seed(0)
    p = 0.1
    mask = keep_scale_mask(torch.Size((64, 64)), p, dtype, CPU)
    assert mask.dtype == dtype
    expected = torch.tensor(1. / (1. - p), dtype=torch.float64).to(dtype)
    assert mask[mask != 0].unique().tolist() == [expected.item()]
