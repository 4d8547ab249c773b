"""The Conditional DETR decoder (registered in ``MODELS``) and its layer.

The paper's full model is read here: the decoder
(:class:`CdetrTransformerDecoder`), its layer
(:class:`ConditionalDecoderLayer`, whose attention is in
:mod:`.attention`), and the three variant modules of the full model, each
picked by the decoder's config: the reference point predicted from the
object query (:class:`CdetrPredictedReference`), the spatial query
``p_q = T(f) p_s`` (:class:`CdetrConditionalSpatialQuery`) and its diagonal
``T`` (:class:`CdetrDiagonalTransform`). The paper's ablations (section
4.3) swap these for the small modules of :mod:`.variants`.

Below, ``f`` is a layer's input decoder embedding (the previous layer's
output; zeros in layer 1), ``c_q`` its content query after self-attention and
``p_s`` the sine embedding of the reference point. A spatial-query module is
called as ``module(first, p_s, f, c_q) -> p_q``, (bs, q, d) each; ``c_q`` is
passed only to a module whose ``from_self_attn`` is True (the decoder then
splits the layer around its self-attention). In layer 1 T is 1, as in the
official code. A learned T is the child ``query_scale`` and the predicted
reference ``ref_point_head`` (their checkpoint names); the decoder registers
a variant's children as its own.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmdet.models.layers.transformer import MLP, coordinate_to_encoding
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from ..speedups.dropout import CheapDropout
from .attention import ConditionalCrossAttention, ConditionalSelfAttention

# The paper's ablations (section 4.3, Table 3, Figure 5) as aliases of the
# variant modules' configs (below and models/variants/); first = default.
REFERENCES = ('predicted', 'learned', 'fixed')
SPATIAL_QUERIES = ('csq', 'csq_c', 'csq_t', 'csq_p', 'csq_i')
TRANSFORMS = ('diagonal', 'identity', 'scalar', 'block', 'full')
_REFERENCE_TYPES = dict(predicted='CdetrPredictedReference',
                        learned='CdetrLearnedReference',
                        fixed='CdetrFixedReference')
_TRANSFORM_TYPES = dict(diagonal='CdetrDiagonalTransform', identity=None,
                        scalar='CdetrScalarTransform',
                        block='CdetrBlockTransform',
                        full='CdetrFullTransform')
_SPATIAL_QUERY_CFGS = dict(
    csq_c=dict(type='CdetrContentSpatialQuery'),
    csq_t=dict(type='CdetrTransformSpatialQuery'),
    csq_p=dict(type='CdetrConditionalSpatialQuery', transform=None),
    csq_i=dict(type='CdetrConditionalSpatialQuery', from_self_attn=True))


def _check_choice(key: str, value: str, allowed: Tuple[str, ...]) -> None:
    """Raise a ValueError naming the key and the allowed values."""
    if value not in allowed:
        raise ValueError(
            f'CdetrTransformerDecoder: {key}={value!r} is not supported; '
            f'allowed values: {", ".join(repr(a) for a in allowed)} '
            f'(default {allowed[0]!r})')


def _variant_cfgs(reference: Union[str, dict], spatial_query: Union[str, dict],
                  transform: str,
                  num_queries: Optional[int]) -> Tuple[dict, dict]:
    """The variant modules' configs from the decoder's switches.

    A dict is a ``MODELS`` config taken as it is; a string is an alias from
    :data:`REFERENCES` / :data:`SPATIAL_QUERIES` / :data:`TRANSFORMS`.

    Returns:
        tuple[dict, dict]: The reference-point and spatial-query configs.
    """
    if isinstance(reference, str):
        _check_choice('reference', reference, REFERENCES)
        if (reference == 'learned') != (num_queries is not None):
            raise ValueError(
                "CdetrTransformerDecoder: num_queries is required by, and "
                "only allowed with, reference='learned' (got reference="
                f'{reference!r}, num_queries={num_queries!r})')
        reference = dict(type=_REFERENCE_TYPES[reference])
        if num_queries is not None:
            reference['num_queries'] = num_queries
    _check_choice('transform', transform, TRANSFORMS)
    if isinstance(spatial_query, str):
        _check_choice('spatial_query', spatial_query, SPATIAL_QUERIES)
        if transform != 'diagonal' and spatial_query != 'csq':
            raise ValueError(
                f'CdetrTransformerDecoder: transform={transform!r} needs '
                f"spatial_query='csq' (got {spatial_query!r}); the paper "
                'varies the form of T only in its full model')
        spatial_query = _SPATIAL_QUERY_CFGS.get(spatial_query, dict(
            type='CdetrConditionalSpatialQuery',
            transform=_TRANSFORM_TYPES[transform]))
    elif transform != 'diagonal':
        raise ValueError('CdetrTransformerDecoder: transform is an alias for '
                         'string spatial_query values; put T in the '
                         'spatial_query config instead')
    return dict(reference), dict(spatial_query)


@MODELS.register_module()
class CdetrTransformerDecoder(BaseModule):
    """Decoder with conditional spatial queries.

    The reference point ``s = sigmoid(MLP(query_pos))`` (``ref_point_head``,
    d -> d -> 2) is fixed across layers; each layer's spatial query is
    ``ref_sine_embed(s) * T`` with ``T = 1`` in layer 1 and
    ``T = MLP(query)`` (``query_scale``, d -> d -> d) afterwards. One shared
    LayerNorm (``norm``) normalises every layer's output.

    Three switches rebuild the paper's ablations (Meng et al. 2021, section
    4.3), each choosing a small registered module (the defaults below in
    this file, the others in ``models/variants/``; the strings below are
    aliases of their configs, a dict config picks a module directly); their
    defaults are the paper's full model, which is also what the official
    code, mmdet and Hugging Face implement. Below, ``f`` is a
    layer's input decoder embedding (the previous layer's output; zeros in
    layer 1), ``c_q`` its content query after self-attention, ``p_s`` the
    sine embedding of the normalised reference point and ``p_q`` the spatial
    query the cross-attention receives (before its projection).

    ``reference`` -- where the reference point comes from (section 4.3):

    - ``'predicted'`` (default): predicted from the object query,
      ``s = sigmoid(MLP(o_q))``.
    - ``'learned'``: a free 2-D point per query, learned as a parameter
      (``ref_point_embed``, ``num_queries`` x 2, unnormalised like the
      paper's ``s``; normalised with a sigmoid). Needs ``num_queries``, which
      ``CdetrConditionalDETR`` fills in from its own.
    - ``'fixed'``: DETR's choice, the unnormalised ``s = (0, 0)`` for every
      query. The paper's box is ``sigmoid(FFN(f) + [s, 0, 0])`` and its
      ``p_s`` is the sine embedding of ``sigmoid(s)``, so every query gets
      the normalised point (0.5, 0.5): the box offset ``inverse_sigmoid(s)``
      is 0 (DETR's box) and ``p_s`` is the image centre's embedding.

    ``spatial_query`` -- the form of ``p_q`` (Table 3):

    - ``'csq'`` (default): ``p_q = T(f) p_s``, T predicted from the decoder
      embedding ``f``.
    - ``'csq_c'``: the decoder content embedding alone, ``p_q = f``.
    - ``'csq_t'``: the transformation alone, ``p_q = lambda_q = FFN(f)``.
    - ``'csq_p'``: the reference point's positional embedding alone,
      ``p_q = p_s``.
    - ``'csq_i'``: ``p_q = T(c_q) p_s``, T predicted from the output of the
      layer's self-attention ``c_q`` instead of from ``f``.

    ``transform`` -- the form of T (Figure 5; only with ``spatial_query``
    ``'csq'``). T is predicted from ``f`` by ``query_scale`` (Linear, ReLU,
    Linear), whose output width sets the form:

    - ``'diagonal'`` (default): ``T = diag(lambda_q)``, d numbers per query.
    - ``'identity'``: T is not learned, ``p_q = p_s`` (the same model as
      ``spatial_query='csq_p'``).
    - ``'scalar'``: ``T = lambda_q I`` with a single number per query.
    - ``'block'``: block-diagonal, one learned ``d/M x d/M`` matrix per
      attention head (M heads; d/M-channel blocks of ``p_s``).
    - ``'full'``: an unconstrained ``d x d`` matrix per query.

    In layer 1 the decoder embedding is the zero content query and T is 1 in
    every form, as in the official code: layer 1's ``p_q`` is ``p_s`` for
    ``csq``/``csq_i``/``csq_p`` and every transform, ``1`` for ``csq_t`` and
    ``0`` (= f) for ``csq_c``. A variant registers only the modules it uses
    (no ``ref_point_head`` without ``'predicted'``, no ``query_scale``
    without a learned T), so DDP keeps ``find_unused_parameters=False``.

    Args:
        num_layers (int): Number of decoder layers. Defaults to 6.
        layer_cfg (dict, optional): Keyword arguments of
            :class:`ConditionalDecoderLayer` (``embed_dims``, ``num_heads``,
            ``feedforward_channels``, ``dropout``). Defaults to None (its
            defaults).
        reference (str | dict): One of :data:`REFERENCES`, or the
            ``MODELS`` config of a reference module
            (:mod:`.variants.reference_points`). Defaults to 'predicted'.
        spatial_query (str | dict): One of :data:`SPATIAL_QUERIES`, or the
            config of a spatial-query module
            (:mod:`.variants.spatial_queries`). Defaults to 'csq'.
        transform (str): One of :data:`TRANSFORMS` (with the string
            ``spatial_query`` 'csq' only; :mod:`.variants.transforms`).
            Defaults to 'diagonal'.
        num_queries (int, optional): Object queries; required by (and only
            allowed with) ``reference='learned'``. Defaults to None.
        num_groups (int): Group DETR's K, filled in by
            ``CdetrConditionalDETR`` from its ``group_detr``. In training
            mode the decoder takes K groups of N queries and each layer's
            self-attention stays inside a group; in eval mode it takes one
            group (as the official GroupDETR branch). With the learned
            reference (:class:`~.variants.CdetrLearnedReference`, which gets
            it too) every one of the K * N queries has its own reference
            point (eval: the first N). Defaults to 1.
        init_cfg (dict, optional): mmengine init config. Defaults to None.
    """

    def __init__(self, num_layers: int = 6, layer_cfg: Optional[dict] = None,
                 reference: Union[str, dict] = 'predicted',
                 spatial_query: Union[str, dict] = 'csq',
                 transform: str = 'diagonal',
                 num_queries: Optional[int] = None,
                 num_groups: int = 1,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError('CdetrTransformerDecoder: num_groups must be an '
                             f'int >= 1, got {num_groups!r}')
        self.num_groups = num_groups
        reference_cfg, spatial_cfg = _variant_cfgs(
            reference, spatial_query, transform, num_queries)
        if num_groups > 1 and reference_cfg.get(
                'type') == 'CdetrLearnedReference':
            if reference_cfg.get('num_groups', num_groups) != num_groups:
                raise ValueError(
                    'CdetrTransformerDecoder: the learned reference has '
                    f"num_groups={reference_cfg['num_groups']}, the decoder "
                    f'{num_groups}; set model.group_detr only')
            # One free reference point per query of every group.
            reference_cfg['num_groups'] = num_groups
        layer_cfg = dict(layer_cfg or {})
        if 'is_first' in layer_cfg:
            raise KeyError('decoder.layer_cfg must not set "is_first": the '
                           'decoder sets it for its first layer')
        self.layers = nn.ModuleList(
            ConditionalDecoderLayer(**layer_cfg, is_first=(i == 0))
            for i in range(num_layers))
        self.embed_dims = d = self.layers[0].embed_dims
        if d % 2:
            raise ValueError(f'embed_dims must be even, got {d}')
        self.num_heads = self.layers[0].cross_attn.num_heads
        # Built in this order (spatial query, then reference), as before
        # the variants were modules: the same random initialisation.
        self._adopt('spatial_query', MODELS.build(
            spatial_cfg, default_args=dict(embed_dims=d,
                                           num_heads=self.num_heads)))
        self._adopt('reference_source', MODELS.build(
            reference_cfg, default_args=dict(embed_dims=d)))
        self.norm = nn.LayerNorm(d)

    def _adopt(self, name: str, variant: nn.Module) -> None:
        """Keep a variant as ``self.<name>``, its children as the decoder's.

        The variant itself stays out of ``_modules`` (in ``__dict__``: no key
        prefix), so its parameters keep their checkpoint names
        (``query_scale.*``, ``ref_point_head.*``, ``ref_point_embed.*``),
        which the converters and existing checkpoints use. It reads no
        ``self.training``: its children carry the mode.
        """
        self.__dict__[name] = variant
        for child_name, child in variant.named_children():
            self.add_module(child_name, child)

    def active_groups(self) -> int:
        """Groups of the current mode: K in training, 1 in eval (Group DETR)."""
        return self.num_groups if self.training else 1

    def ref_sine_embed(self, reference: Tensor) -> Tensor:
        """Sine embedding of reference points, d / 2 features per axis.

        Args:
            reference (Tensor): Normalised (x, y), (bs, num_queries, 2).

        Returns:
            Tensor: (bs, num_queries, d), in the official (y, x) order.
        """
        return coordinate_to_encoding(reference,
                                      num_feats=self.embed_dims // 2)

    def apply_transform(self, embed: Tensor, source: Tensor) -> Tensor:
        """``T(source) embed`` of a :class:`CdetrConditionalSpatialQuery`.

        Args:
            embed (Tensor): ``p_s``, (bs, num_queries, d).
            source (Tensor): What T is predicted from (``f`` or ``c_q``),
                (bs, num_queries, d).

        Returns:
            Tensor: (bs, num_queries, d).
        """
        return self.spatial_query.apply_transform(embed, source)

    def forward(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                memory_pos: Tensor,
                memory_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Run all layers.

        Args:
            query (Tensor): Initial content queries (zeros),
                (bs, num_queries, d).
            query_pos (Tensor): Object queries, (bs, num_queries, d).
            memory (Tensor): Encoder output, (bs, num_keys, d).
            memory_pos (Tensor): Memory positional encoding, (bs, num_keys, d).
            memory_mask (Tensor, optional): (bs, num_keys), True at padding.

        Returns:
            tuple[Tensor, Tensor]: ``hidden_states``, every layer's normalised
            output, (num_layers, bs, num_queries, d); ``references``, the
            reference points s, (bs, num_queries, 2).

        Raises:
            ValueError: In training mode with K groups, ``num_queries`` is
                not a multiple of K.
        """
        groups = self.active_groups()  # Group DETR: K in training, else 1
        if query_pos.shape[1] % groups:
            raise ValueError(f'{query_pos.shape[1]} object queries do not '
                             f'split into {groups} groups (decoder.num_groups)')
        references = self.reference_source(query_pos)  # (bs, nq, 2)
        ref_sine_embed = self.ref_sine_embed(references)  # (bs, nq, d)
        hidden_states = []
        for layer in self.layers:
            if self.spatial_query.from_self_attn:  # T from c_q (CSQ-I)
                c_q = layer.self_attn_block(query, query_pos,
                                            groups)  # (bs, nq, d)
                query = layer.cross_ffn_block(
                    c_q, memory, query_pos, memory_pos,
                    self.spatial_query(layer.is_first, ref_sine_embed, query,
                                       c_q), memory_mask)
            else:  # one module call: hooks on the layer see its p_q
                query = layer(query, memory, query_pos, memory_pos,
                              self.spatial_query(layer.is_first,
                                                 ref_sine_embed, query),
                              memory_mask, groups)
            hidden_states.append(self.norm(query))
        return torch.stack(hidden_states), references


class ConditionalDecoderLayer(nn.Module):
    """``self_attn -> norm1 -> cross_attn -> norm2 -> ffn -> norm3``.

    Parameter names follow the official layer (``linear1``, ``norm1``, ...),
    with the attention projections grouped under ``self_attn`` and
    ``cross_attn`` as in mmdet.

    Args:
        embed_dims (int): Model width d. Defaults to 256.
        num_heads (int): Attention heads. Defaults to 8.
        feedforward_channels (int): FFN hidden width. Defaults to 2048.
        dropout (float): Dropout on attention weights, residual branches and
            the FFN hidden layer. Defaults to 0.1.
        is_first (bool): Whether this is the first decoder layer (it owns the
            cross-attention's object-query projection). Defaults to False.
        attn_dropout (float, optional): Dropout on the attention weights
            alone, if it should differ from ``dropout`` (Hugging Face's
            ``attention_dropout``; the official code has one rate). Defaults
            to None: ``dropout``.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8,
                 feedforward_channels: int = 2048, dropout: float = 0.1,
                 is_first: bool = False,
                 attn_dropout: Optional[float] = None) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.is_first = is_first  # the decoder sets T = 1 in this layer
        attn_drop = dropout if attn_dropout is None else attn_dropout
        self.self_attn = ConditionalSelfAttention(embed_dims, num_heads,
                                                  attn_drop)
        self.cross_attn = ConditionalCrossAttention(embed_dims, num_heads,
                                                    attn_drop, is_first)
        self.linear1 = nn.Linear(embed_dims, feedforward_channels)
        self.linear2 = nn.Linear(feedforward_channels, embed_dims)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.norm3 = nn.LayerNorm(embed_dims)
        self.dropout = CheapDropout(dropout)
        self.dropout1 = CheapDropout(dropout)
        self.dropout2 = CheapDropout(dropout)
        self.dropout3 = CheapDropout(dropout)

    def forward(self, query: Tensor, memory: Tensor, query_pos: Tensor,
                memory_pos: Tensor, ref_sine_embed: Tensor,
                memory_mask: Optional[Tensor] = None,
                num_groups: int = 1) -> Tensor:
        """Refine the content queries once.

        Args:
            query (Tensor): Content queries, (bs, num_queries, d).
            memory (Tensor): Encoder output, (bs, num_keys, d).
            query_pos (Tensor): Object queries, (bs, num_queries, d).
            memory_pos (Tensor): Memory positional encoding, (bs, num_keys, d).
            ref_sine_embed (Tensor): Conditional spatial embedding (sine of
                the reference point times T), (bs, num_queries, d).
            memory_mask (Tensor, optional): (bs, num_keys), True at padding.
            num_groups (int): Group DETR: self-attention stays inside each of
                ``num_groups`` consecutive blocks of queries (see
                :meth:`self_attn_block`). Defaults to 1.

        Returns:
            Tensor: Updated content queries, (bs, num_queries, d).
        """
        query = self.self_attn_block(query, query_pos, num_groups)
        return self.cross_ffn_block(query, memory, query_pos, memory_pos,
                                    ref_sine_embed, memory_mask)

    def self_attn_block(self, query: Tensor, query_pos: Tensor,
                        num_groups: int = 1) -> Tensor:
        """``norm1(query + self_attn)``: the content query ``c_q``.

        Split from :meth:`forward` so the decoder can predict T from ``c_q``
        (the paper's CSQ-I ablation). Shapes as in :meth:`forward`.

        Group DETR: the ``num_queries = K * N`` queries are K groups of N
        consecutive rows, and a query attends only to its own group's. The
        groups are moved into the batch, (bs, K * N, d) -> (bs * K, N, d),
        rather than masked: no K N x K N attention is formed (the official
        GroupDETR branch does the same with its sequence-first tensors).
        ``num_groups=1`` takes the ungrouped call itself: even a no-op
        reshape would add autograd nodes and reorder the gradient sums.
        """
        if num_groups == 1:
            attn = self.self_attn(query, query_pos)
        else:
            bs, num_queries, dims = query.shape
            grouped = (bs * num_groups, num_queries // num_groups, dims)
            attn = self.self_attn(query.reshape(grouped),
                                  query_pos.reshape(grouped)).reshape(
                                      bs, num_queries, dims)  # from (bs*K, N, d)
        return self.norm1(query + self.dropout1(attn))

    def cross_ffn_block(self, query: Tensor, memory: Tensor, query_pos: Tensor,
                        memory_pos: Tensor, ref_sine_embed: Tensor,
                        memory_mask: Optional[Tensor] = None) -> Tensor:
        """Cross-attention, FFN and their norms on ``c_q``; see :meth:`forward`."""
        query = self.norm2(query + self.dropout2(
            self.cross_attn(query, memory, query_pos, memory_pos,
                            ref_sine_embed, memory_mask)))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(query))))
        return self.norm3(query + self.dropout3(ffn))


# The paper's full model's variant modules; the ablations' are in models/variants/.


@MODELS.register_module()
class CdetrPredictedReference(nn.Module):
    """The paper's default: ``s = sigmoid(MLP(o_q))`` (d -> d -> 2).

    Args:
        embed_dims (int): d.
    """

    def __init__(self, embed_dims: int) -> None:
        super().__init__()
        self.ref_point_head = MLP(embed_dims, embed_dims, 2, 2)

    def forward(self, query_pos: Tensor) -> Tensor:
        """(bs, q, d) object queries -> (bs, q, 2) points."""
        return self.ref_point_head(query_pos).sigmoid()


@MODELS.register_module()
class CdetrConditionalSpatialQuery(nn.Module):
    """``p_q = T(f) p_s`` (the paper's CSQ), or ``T(c_q) p_s`` (CSQ-I).

    Args:
        embed_dims (int): d.
        num_heads (int): Attention heads M (the block form needs it).
            Defaults to 8.
        transform (str | dict, optional): T's ``MODELS`` type name or
            config (:class:`CdetrDiagonalTransform`, :mod:`.variants.transforms`);
            None for the identity
            (``p_q = p_s``, CSQ-P). Defaults to 'CdetrDiagonalTransform'.
        from_self_attn (bool): Predict T from ``c_q`` instead of ``f``
            (CSQ-I). Defaults to False.
    """

    def __init__(self, embed_dims: int, num_heads: int = 8,
                 transform: Union[str, dict, None] = 'CdetrDiagonalTransform',
                 from_self_attn: bool = False) -> None:
        super().__init__()
        self.from_self_attn = from_self_attn
        if transform is not None:
            if isinstance(transform, str):
                transform = dict(type=transform)
            self.query_scale = MODELS.build(
                transform,
                default_args=dict(embed_dims=embed_dims, num_heads=num_heads))

    def apply_transform(self, embed: Tensor, source: Tensor) -> Tensor:
        """``T(source) embed``, (bs, q, d) each; the identity without T."""
        if not hasattr(self, 'query_scale'):
            return embed
        return self.query_scale.transform(embed, source)

    def forward(self, first: bool, embed: Tensor, f: Tensor,
                c_q: Optional[Tensor] = None) -> Tensor:
        """See the module docstring; ``embed`` is ``p_s``."""
        if first:  # T = 1 in layer 1
            return embed
        return self.apply_transform(embed, c_q if self.from_self_attn else f)


@MODELS.register_module()
class CdetrDiagonalTransform(MLP):
    """The paper's default: ``T = diag(lambda_q)``, d numbers per query.

    Args:
        embed_dims (int): d.
        num_heads (int): Attention heads M (unused; every form takes it).
        out_dims (int, optional): Width of the prediction. Defaults to d.
    """

    def __init__(self, embed_dims: int, num_heads: int = 8,
                 out_dims: int = None) -> None:
        super().__init__(embed_dims, embed_dims, out_dims or embed_dims, 2)

    def transform(self, embed: Tensor, source: Tensor) -> Tensor:
        """``T(source) p_s``.

        Args:
            embed (Tensor): ``p_s``, (bs, q, d).
            source (Tensor): What T is predicted from, (bs, q, d).

        Returns:
            Tensor: (bs, q, d).
        """
        return embed * self(source)
