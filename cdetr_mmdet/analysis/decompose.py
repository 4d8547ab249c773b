"""Split one cross-attention call into its spatial and content logits.

Three cross-attentions are understood, each from the inputs its module was
called with (captured by :mod:`cdetr_mmdet.analysis.cross_attention`):

* ours (:class:`~cdetr_mmdet.models.attention.ConditionalCrossAttention`) and
  mmdet's ``ConditionalAttention(cross_attn=True)``: each head's query is
  ``[c_q, p_q]`` and key ``[c_k, p_k]``, so the logit is exactly
  ``c_q.c_k + p_q.p_k``. In the first decoder layer (and with mmdet's
  ``keep_query_pos``) the model adds the projected object query to ``c_q``
  and the projected key position to ``c_k``; the content part here is what the
  model actually concatenates, so it includes those terms.
* DETR (mmcv ``MultiheadAttention`` around ``nn.MultiheadAttention``):
  ``q = Wq (c_q + p_q) + b_q`` and ``k = Wk (c_k + p_k) + b_k`` cannot be split
  per factor without cross terms, so the split is on the key side only: the
  spatial logit is ``q . (Wk p_k)`` (the whole query against the key's
  positional part) and the content logit ``q . (Wk c_k + b_k)``; they add up to
  DETR's actual logit.

Logits are raw dot products per head (bs, heads, num_queries, num_keys);
the model's softmax multiplies their sum by ``scale``.
"""
from dataclasses import dataclass
from typing import Dict

import torch
from torch import Tensor, nn


@dataclass
class LogitSplit:
    """One layer's decomposed cross-attention logits.

    Attributes:
        spatial (Tensor): ``p_q.p_k`` (DETR: ``q.Wk p_k``),
            (bs, heads, num_queries, num_keys).
        content (Tensor): ``c_q.c_k`` (DETR: ``q.(Wk c_k + b_k)``), same shape.
        combined (Tensor): The logit as the model forms it (from the
            concatenated / summed query and key), same shape.
        scale (float): The model's softmax scale, ``head_width ** -0.5``.
        key_padding_mask (Tensor | None): (bs, num_keys), True at padding.
    """
    spatial: Tensor
    content: Tensor
    combined: Tensor
    scale: float
    key_padding_mask: 'Tensor | None'


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """(bs, n, num_heads * c) -> (bs, num_heads, n, c)."""
    bs, n, dims = x.shape
    return x.view(bs, n, num_heads, dims // num_heads).transpose(1, 2)


def _conditional(module: nn.Module, query: Tensor, memory: Tensor,
                 query_pos: Tensor, memory_pos: Tensor,
                 ref_sine_embed: Tensor, add_object_query: bool,
                 key_padding_mask) -> LogitSplit:
    """Shared by ours and mmdet's ConditionalAttention (same projections)."""
    heads = module.num_heads
    c_q = module.qcontent_proj(query)
    c_k = module.kcontent_proj(memory)
    p_k = module.kpos_proj(memory_pos)
    if add_object_query:
        c_q = c_q + module.qpos_proj(query_pos)
        c_k = c_k + p_k
    p_q = module.qpos_sine_proj(ref_sine_embed)
    c_q, c_k, p_q, p_k = (_heads(t, heads) for t in (c_q, c_k, p_q, p_k))
    q = torch.cat([c_q, p_q], dim=-1)  # (bs, heads, nq, 2 d / heads)
    k = torch.cat([c_k, p_k], dim=-1)
    return LogitSplit(spatial=p_q @ p_k.transpose(-1, -2),
                      content=c_q @ c_k.transpose(-1, -2),
                      combined=q @ k.transpose(-1, -2),
                      scale=q.shape[-1] ** -0.5,
                      key_padding_mask=key_padding_mask)


def split_ours(module: nn.Module, inputs: Dict) -> LogitSplit:
    """Our ``ConditionalCrossAttention`` from its bound forward arguments."""
    is_first = getattr(module, 'is_first', hasattr(module, 'qpos_proj'))
    return _conditional(module, inputs['query'], inputs['memory'],
                        inputs['query_pos'], inputs['memory_pos'],
                        inputs['ref_sine_embed'], is_first,
                        inputs.get('memory_mask'))


def split_mmdet_conditional(module: nn.Module, inputs: Dict) -> LogitSplit:
    """mmdet's ``ConditionalAttention(cross_attn=True)``."""
    if inputs.get('attn_mask') is not None:
        raise NotImplementedError('attn_mask in a cross-attention is not '
                                  'supported by the analysis')
    add = bool(inputs.get('is_first')) or module.keep_query_pos
    return _conditional(module, inputs['query'], inputs['key'],
                        inputs.get('query_pos'), inputs['key_pos'],
                        inputs['ref_sine_embed'], add,
                        inputs.get('key_padding_mask'))


def split_detr(module: nn.Module, inputs: Dict) -> LogitSplit:
    """mmcv ``MultiheadAttention`` (DETR), batch-first."""
    if not module.batch_first:
        raise NotImplementedError('only batch_first=True is supported')
    if inputs.get('attn_mask') is not None:
        raise NotImplementedError('attn_mask in a cross-attention is not '
                                  'supported by the analysis')
    mha = module.attn
    if not mha._qkv_same_embed_dim:
        raise NotImplementedError('separate q/k/v projection weights '
                                  '(kdim/vdim != embed_dim) are not supported')
    d, heads = mha.embed_dim, mha.num_heads
    w_q, w_k, _ = mha.in_proj_weight.split(d)
    b_q, b_k, _ = (mha.in_proj_bias.split(d) if mha.in_proj_bias is not None
                   else (None, None, None))
    query, key = inputs['query'], inputs['key']
    query_pos, key_pos = inputs.get('query_pos'), inputs.get('key_pos')
    if query_pos is not None:
        query = query + query_pos
    q = _heads(nn.functional.linear(query, w_q, b_q), heads)
    k_content = _heads(nn.functional.linear(key, w_k, b_k), heads)
    k = _heads(nn.functional.linear(
        key if key_pos is None else key + key_pos, w_k, b_k), heads)
    if key_pos is None:
        k_pos = torch.zeros_like(k_content)
    else:
        k_pos = _heads(nn.functional.linear(key_pos, w_k), heads)
    return LogitSplit(spatial=q @ k_pos.transpose(-1, -2),
                      content=q @ k_content.transpose(-1, -2),
                      combined=q @ k.transpose(-1, -2),
                      scale=q.shape[-1] ** -0.5,
                      key_padding_mask=inputs.get('key_padding_mask'))


def masked_softmax(logits: Tensor, scale: float,
                   key_padding_mask: 'Tensor | None') -> Tensor:
    """Softmax over the keys of ``scale * logits``, exactly 0 at padding.

    Args:
        logits (Tensor): (bs, heads, num_queries, num_keys).
        scale (float): The model's scale.
        key_padding_mask (Tensor | None): (bs, num_keys), True at padding.

    Returns:
        Tensor: Attention weights, same shape, summing to 1 over the keys.
    """
    logits = logits * scale
    if key_padding_mask is not None:
        logits = logits.masked_fill(key_padding_mask[:, None, None, :],
                                    float('-inf'))
    return logits.softmax(dim=-1)
