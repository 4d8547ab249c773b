"""Which attention / dropout path each device takes (tested on the CPU).

A CUDA tensor is stood in for by a ``meta`` one: any device but the CPU must
take PyTorch's fused kernels, never the host-drawn SFC64 masks.
"""
import pytest
import torch
import torch.nn.functional as F

import cdetr_mmdet.speedups.attention as attention_module
import cdetr_mmdet.speedups.dropout as dropout_module
from cdetr_mmdet.models.transformer import EncoderLayer
from cdetr_mmdet.speedups import CheapDropout, uses_explicit_path
from cdetr_mmdet.speedups.attention import attention


@pytest.mark.parametrize('device,p,explicit', [
    ('cpu', 0.1, True), ('cpu', 0., False), ('cuda', 0.1, False),
    ('cuda:1', 0.1, False), ('cuda', 0., False), ('meta', 0.1, False)])
def test_dispatch_by_device(device, p, explicit):
    assert uses_explicit_path(torch.device(device), p) is explicit
    assert uses_explicit_path(device, p) is explicit


@pytest.fixture
def no_host_masks(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError('a mask was drawn by the CPU path')
    monkeypatch.setattr(attention_module, 'drop_mask', fail)
    monkeypatch.setattr(dropout_module, 'random_bits', fail)


def test_non_cpu_attention_is_sdpa_with_dropout_p(no_host_masks, monkeypatch):
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs.get('dropout_p', 0.))
        return sdpa(*args, **kwargs)
    monkeypatch.setattr(attention_module.F, 'scaled_dot_product_attention', spy)
    q = torch.empty(2, 4, 5, 8, device='meta')
    out = attention(q, q, q, dropout_p=0.1)
    assert out.shape == (2, 4, 5, 8) and seen == [0.1]


def test_non_cpu_dropout_is_torchs(no_host_masks):
    x = torch.empty(3, 7, device='meta')
    assert CheapDropout(0.1).train()(x).shape == x.shape


def test_non_cpu_encoder_training_uses_multihead_attention(no_host_masks,
                                                           monkeypatch):
    layer = EncoderLayer(32, 4, 64, dropout=0.1).to('meta').train()
    monkeypatch.setattr('cdetr_mmdet.models.transformer._self_attention',
                        lambda *a: (_ for _ in ()).throw(AssertionError()))
    x = torch.empty(2, 6, 32, device='meta')
    assert layer(x, x).shape == x.shape


def test_cpu_training_draws_the_cheap_masks(monkeypatch):
    calls = []
    real = attention_module.drop_mask

    def spy(*args):
        calls.append(args[0])
        return real(*args)
    monkeypatch.setattr(attention_module, 'drop_mask', spy)
    q = torch.randn(2, 4, 5, 8)
    attention(q, q, q, dropout_p=0.1)
    assert calls == [torch.Size((8, 5, 5))]
