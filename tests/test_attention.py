"""Conditional attention against a plain reference computation."""
import math

import pytest
import torch

from cdetr_mmdet.models.attention import (ConditionalCrossAttention,
                                          ConditionalSelfAttention)


def reference_attention(q, k, v, num_heads, mask=None):
    """Textbook multi-head attention on (bs, n, width) tensors, per head."""
    bs, nq, qk_width = q.shape
    head_qk = qk_width // num_heads
    head_v = v.shape[-1] // num_heads
    outs = []
    for h in range(num_heads):
        qh = q[..., h * head_qk:(h + 1) * head_qk]
        kh = k[..., h * head_qk:(h + 1) * head_qk]
        vh = v[..., h * head_v:(h + 1) * head_v]
        logits = qh @ kh.transpose(1, 2) / math.sqrt(head_qk)
        if mask is not None:
            logits = logits.masked_fill(mask[:, None, :], float('-inf'))
        outs.append(logits.softmax(-1) @ vh)
    return torch.cat(outs, dim=-1)


def per_head_concat(a, b, num_heads):
    """Concatenate a and b head by head: [a_1, b_1, a_2, b_2, ...]."""
    bs, n, d = a.shape
    return torch.cat([a.view(bs, n, num_heads, -1),
                      b.view(bs, n, num_heads, -1)], -1).view(bs, n, 2 * d)


@pytest.mark.parametrize('is_first', [True, False])
def test_cross_attention_equals_reference(is_first):
    torch.manual_seed(0)
    d, heads = 32, 4
    attn = ConditionalCrossAttention(d, heads, attn_drop=0.,
                                     is_first=is_first).eval()
    query, query_pos, sine = (torch.randn(2, 5, d) for _ in range(3))
    memory, memory_pos = torch.randn(2, 7, d), torch.randn(2, 7, d)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 5:] = True  # padding in the second image
    out = attn(query, memory, query_pos, memory_pos, sine, mask)

    q_content = attn.qcontent_proj(query)
    k_content = attn.kcontent_proj(memory)
    k_pos = attn.kpos_proj(memory_pos)
    if is_first:
        q_content = q_content + attn.qpos_proj(query_pos)
        k_content = k_content + k_pos
    q = per_head_concat(q_content, attn.qpos_sine_proj(sine), heads)
    k = per_head_concat(k_content, k_pos, heads)
    expected = attn.out_proj(
        reference_attention(q, k, attn.v_proj(memory), heads, mask))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_only_the_first_layer_owns_the_object_query_projection():
    first = ConditionalCrossAttention(32, 4, is_first=True)
    later = ConditionalCrossAttention(32, 4, is_first=False)
    assert hasattr(first, 'qpos_proj')
    assert not hasattr(later, 'qpos_proj')
    # Later layers ignore query_pos in cross-attention.
    args = [torch.randn(1, 3, 32), torch.randn(1, 4, 32)]
    pos_a, pos_b = torch.randn(1, 3, 32), torch.randn(1, 3, 32)
    rest = [torch.randn(1, 4, 32), torch.randn(1, 3, 32)]
    later.eval()
    torch.testing.assert_close(later(args[0], args[1], pos_a, *rest),
                               later(args[0], args[1], pos_b, *rest))


def test_self_attention_equals_reference():
    torch.manual_seed(1)
    d, heads = 32, 4
    attn = ConditionalSelfAttention(d, heads, attn_drop=0.).eval()
    query, query_pos = torch.randn(2, 6, d), torch.randn(2, 6, d)
    q = attn.qcontent_proj(query) + attn.qpos_proj(query_pos)
    k = attn.kcontent_proj(query) + attn.kpos_proj(query_pos)
    expected = attn.out_proj(
        reference_attention(q, k, attn.v_proj(query), heads))
    torch.testing.assert_close(attn(query, query_pos), expected, rtol=0,
                               atol=1e-5)


def test_bad_head_count_is_rejected():
    with pytest.raises(ValueError, match='divisible'):
        ConditionalCrossAttention(30, 4)
