"""Cheap dropout masks: the distribution of ``nn.Dropout``, exact without dropout."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from cdetr_testing import randomize_

from cdetr_mmdet.models.attention import (ConditionalCrossAttention,
                                          ConditionalSelfAttention, attention)
from cdetr_mmdet.models.decoder import ConditionalDecoderLayer
from cdetr_mmdet.models.transformer import EncoderLayer
from cdetr_mmdet.speedups.dropout import (CheapDropout, drop_mask, dropout,
                                          keep_scale_mask, random_bits)

P = 0.1


def _corr(a, b):
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).mean() / (a.std() * b.std()))


def test_mask_rate_scale_and_independence():
    torch.manual_seed(0)
    shape = torch.Size((4, 8, 64, 256))  # (bs, heads, queries, keys)
    mask = keep_scale_mask(shape, P, torch.float32, torch.device('cpu'))
    # Only two values: dropped 0, kept 1 / (1 - p).
    values = mask.unique()
    assert values.tolist() == [0., pytest.approx(1 / (1 - P))]
    dropped = (mask == 0).double()
    n = shape.numel()
    sigma = math.sqrt(P * (1 - P) / n)
    assert abs(dropped.mean().item() - P) < 5 * sigma
    assert abs(mask.double().mean().item() - 1.) < 5 * sigma / (1 - P)
    # The same rate in every head and every query row (no structure).
    per_head = dropped.mean(dim=(0, 2, 3))
    assert (per_head - P).abs().max() < 5 * math.sqrt(P * (1 - P) / (n / 8))
    per_row = dropped.mean(dim=-1)  # 256 draws each
    row_sigma = math.sqrt(P * (1 - P) / 256)
    assert abs(per_row.std().item() - row_sigma) < 0.1 * row_sigma
    # Neighbours along keys (incl. the two halves of one 64-bit draw),
    # queries and heads are uncorrelated.
    bound = 5 / math.sqrt(n / 2)
    assert abs(_corr(dropped[..., 0::2], dropped[..., 1::2])) < bound
    assert abs(_corr(dropped[:, :, 0::2], dropped[:, :, 1::2])) < bound
    assert abs(_corr(dropped[:, 0::2], dropped[:, 1::2])) < bound
    # A new draw differs (the generator advances).
    again = keep_scale_mask(shape, P, torch.float32, torch.device('cpu'))
    assert not torch.equal(mask, again)


def test_random_bits_are_uniform_and_reproducible():
    """Every one of the 32 bit positions is a fair coin; the rate holds at
    small and large p; ``torch.manual_seed`` reproduces the bits."""
    torch.manual_seed(0)
    n = 2**20
    bits = random_bits(torch.Size((n, )), torch.device('cpu'))
    assert bits.dtype == torch.int32
    ones = torch.stack([((bits >> i) & 1).double().mean()
                        for i in range(32)])
    assert (ones - 0.5).abs().max() < 5 * math.sqrt(0.25 / n)
    for p in (0.01, 0.5, 0.9):
        rate = drop_mask(torch.Size((n, )), p,
                         torch.device('cpu')).double().mean().item()
        assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n), p
    torch.manual_seed(5)
    first = random_bits(torch.Size((3, 1001)), torch.device('cpu'))
    state = torch.get_rng_state()
    second = random_bits(torch.Size((3, 1001)), torch.device('cpu'))
    torch.manual_seed(5)
    assert torch.equal(random_bits(torch.Size((3, 1001)), 'cpu'), first)
    torch.set_rng_state(state)  # a resumed run draws the same masks
    assert torch.equal(random_bits(torch.Size((3, 1001)), 'cpu'), second)
    assert not torch.equal(first, second)
    # The boolean and the scaled masks of one draw agree.
    torch.manual_seed(6)
    dropped = drop_mask(torch.Size((64, 64)), P, 'cpu')
    torch.manual_seed(6)
    keep = keep_scale_mask(torch.Size((64, 64)), P, torch.float32, 'cpu')
    assert torch.equal(dropped, keep == 0)


def test_dropout_function_and_module():
    x = torch.randn(3, 5, 7)
    assert dropout(x, P, training=False) is x
    assert dropout(x, 0., training=True) is x
    assert torch.equal(dropout(x, 1., training=True), torch.zeros_like(x))
    torch.manual_seed(1)
    out = dropout(x, P)
    torch.manual_seed(1)
    mask = keep_scale_mask(x.shape, P, x.dtype, x.device)
    assert torch.equal(out, x * mask)
    module = CheapDropout(P)
    assert isinstance(module, torch.nn.Dropout) and module.p == P
    assert module.eval()(x) is x
    # Gradients go through the same mask.
    x.requires_grad_(True)
    torch.manual_seed(2)
    module.train()(x).sum().backward()
    torch.manual_seed(2)
    assert torch.equal(x.grad, keep_scale_mask(x.shape, P, x.dtype, x.device))


def test_attention_drops_the_weights_with_rate_p_and_scale():
    """With identity values the output IS the dropped attention weights."""
    torch.manual_seed(0)
    bs, heads, nq, nk, c = 2, 4, 50, 40, 8
    q, k = torch.randn(bs, heads, nq, 2 * c), torch.randn(bs, heads, nk, 2 * c)
    v = torch.eye(nk).expand(bs, heads, nk, nk)
    mask = torch.ones(bs, 1, 1, nk, dtype=torch.bool)
    mask[1, ..., 30:] = False
    weights = attention(q, k, v, mask)  # no dropout: softmax weights
    assert torch.allclose(weights.sum(-1), torch.ones(bs, heads, nq))
    assert (weights[1, ..., 30:] == 0).all()
    torch.manual_seed(3)
    dropped = attention(q, k, v, mask, dropout_p=P)
    torch.manual_seed(3)
    keep = keep_scale_mask(torch.Size((bs * heads, nq, nk)), P,
                           torch.float32, torch.device('cpu'))
    assert torch.allclose(dropped, weights * keep.view(bs, heads, nq, nk),
                          atol=1e-6)
    # Rate and scale over many draws: E[dropped] = weights.
    draws = torch.stack([attention(q, k, v, mask, dropout_p=P)
                         for _ in range(200)])
    live = weights > 0
    zero_rate = (draws[:, live] == 0).double().mean().item()
    assert abs(zero_rate - P) < 5 * math.sqrt(P * (1 - P) / draws[:, live].numel())
    # Each mean is w * Binomial(200, 1 - p) / (200 (1 - p)): sd w * 0.0236.
    sd = weights * math.sqrt(P / (1 - P) / len(draws))
    assert ((draws.mean(0) - weights).abs() <= 5 * sd + 1e-6).all()


def test_attention_without_dropout_is_sdpa_exactly():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 10, 8) for _ in range(3))
    mask = torch.rand(2, 1, 1, 10) > 0.3
    assert torch.equal(attention(q, k, v, mask),
                       F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


@pytest.mark.parametrize('layer', ['encoder', 'decoder', 'self', 'cross'])
def test_train_mode_without_dropout_equals_eval_exactly(layer):
    """Dropout 0 in train mode runs today's kernels: bit-equal to eval."""
    torch.manual_seed(0)
    d, heads, n = 32, 4, 12
    x, pos = torch.randn(2, n, d), torch.randn(2, n, d)
    mem, mem_pos = torch.randn(2, 9, d), torch.randn(2, 9, d)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True
    module, args = {
        'encoder': (EncoderLayer(d, heads, 64, dropout=0.), (mem, mem_pos, pad)),
        'decoder': (ConditionalDecoderLayer(d, heads, 64, 0., True),
                    (x, mem, pos, mem_pos, pos, pad)),
        'self': (ConditionalSelfAttention(d, heads, 0.), (x, pos)),
        'cross': (ConditionalCrossAttention(d, heads, 0., True),
                  (x, mem, pos, mem_pos, pos, pad)),
    }[layer]
    assert torch.equal(module.train()(*args), module.eval()(*args))


def test_encoder_train_path_uses_the_same_projections():
    """The training path (cheap dropout) computes nn.MultiheadAttention's
    attention: with every mask kept it equals the eval path."""
    torch.manual_seed(0)
    d, heads = 32, 4
    # Random biases too: nn.MultiheadAttention zeroes in_proj_bias, which
    # would hide a training path dropping the value bias (encoder
    # ``_self_attention`` mutant 28).
    layer = randomize_(EncoderLayer(d, heads, 64, dropout=P))
    x, pos = torch.randn(2, 15, d), torch.randn(2, 15, d)
    pad = torch.zeros(2, 15, dtype=torch.bool)
    pad[0, 11:] = True
    expected = layer.eval()(x, pos, pad)
    keep_all = copy.deepcopy(layer).train()
    # p tiny: no element of these small masks is dropped (threshold 1),
    # the scale is 1 / (1 - 2**-32), i.e. 1 in float32.
    for module in keep_all.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 2.**-32
    keep_all.self_attn.dropout = 2.**-32
    assert torch.allclose(keep_all(x, pos, pad), expected, atol=1e-5)
    # With p = 0.1 the output is random but finite and differs per draw.
    layer.train()
    a, b = layer(x, pos, pad), layer(x, pos, pad)
    assert torch.isfinite(a).all() and not torch.equal(a, b)


@pytest.mark.parametrize('layer', ['encoder', 'decoder'])
def test_attn_dropout_sets_the_attention_weights_rate_alone(layer):
    """``attn_dropout`` (HF's ``attention_dropout``) overrides ``dropout`` on
    the attention weights only; residual and FFN dropout keep ``dropout``."""
    torch.manual_seed(0)
    d, heads = 32, 4
    x, pos = torch.randn(2, 12, d), torch.randn(2, 12, d)
    mem, mem_pos = torch.randn(2, 9, d), torch.randn(2, 9, d)

    def build(dropout, attn_dropout):
        if layer == 'encoder':
            return (EncoderLayer(d, heads, 64, dropout, attn_dropout),
                    (mem, mem_pos, None))
        return (ConditionalDecoderLayer(d, heads, 64, dropout, True,
                                        attn_dropout),
                (x, mem, pos, mem_pos, pos, None))

    # Attention dropout only: train differs from eval and between draws.
    module, args = build(0., 0.5)
    expected = module.eval()(*args)
    a, b = module.train()(*args), module(*args)
    assert not torch.equal(a, expected) and not torch.equal(a, b)
    # Residual/FFN dropout only, switched off after the build: train == eval
    # bit for bit, so the attention weights were not dropped.
    module, args = build(0.5, 0.)
    for sub in module.modules():
        if isinstance(sub, CheapDropout):
            sub.p = 0.
    assert torch.equal(module.train()(*args), module.eval()(*args))


def test_compiled_dropout_draws_the_eager_masks():
    """torch.compile runs the (numpy) bit source eagerly: same masks."""
    compiled = torch.compile(lambda t: dropout(t, P))
    # A second shape recompiles with dynamic shapes, where tracing the numpy
    # calls would break (setStorage out of bounds).
    for shape in ((2, 4, 256), (4, 33, 16)):
        x = torch.randn(shape)
        torch.manual_seed(7)
        eager = dropout(x, P)
        torch.manual_seed(7)
        assert torch.equal(compiled(x), eager), shape
