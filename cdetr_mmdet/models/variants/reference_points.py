"""Where the reference point s comes from: the ablations (section 4.3).

The paper's default, ``s = sigmoid(MLP(o_q))``, is
:class:`~cdetr_mmdet.models.decoder.CdetrPredictedReference`. Each module
maps the object queries (bs, q, d) to normalised points (bs, q, 2) in [0,
1]. Their parameters keep the decoder's checkpoint names
(``ref_point_head``, ``ref_point_embed``): the decoder registers a variant's
children as its own.
"""
from mmdet.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class CdetrLearnedReference(nn.Module):
    """A free 2-D point per query, learned as a parameter.

    ``ref_point_embed`` (K * q x 2) is unnormalised like the paper's ``s``
    and normalised with a sigmoid; the object queries are not read.

    Group DETR (``num_groups=K``, filled in by the decoder): one point per
    query of every group, group g in rows g * q..; all K * q rows in
    training, the first group's q in eval mode (the mode of
    ``ref_point_embed``, the child the decoder registers).

    Args:
        embed_dims (int): d (unused; every variant takes it).
        num_queries (int): q, the detector's object queries (per group).
        num_groups (int): Group DETR's K. Defaults to 1.
    """

    def __init__(self, embed_dims: int, num_queries: int,
                 num_groups: int = 1) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.num_groups = num_groups
        self.ref_point_embed = nn.Embedding(num_queries * num_groups, 2)

    def forward(self, query_pos: Tensor) -> Tensor:
        """(bs, q, d) object queries -> (bs, q, 2) points.

        Raises:
            ValueError: q differs from ``num_queries`` times the groups of
                the current mode (K in training, 1 in eval).
        """
        bs, num_queries = query_pos.shape[:2]
        groups = self.num_groups if self.ref_point_embed.training else 1
        if num_queries != self.num_queries * groups:
            raise ValueError(f'{num_queries} object queries, but the learned '
                             f'reference points were built for '
                             f'{self.num_queries} (decoder.num_queries) x '
                             f'{groups} group(s)')
        weight = self.ref_point_embed.weight  # (K * q, 2)
        if weight.shape[0] != num_queries:  # eval of Group DETR: group 0
            weight = weight[:num_queries]
        return weight.sigmoid()[None].expand(bs, -1, -1)


@MODELS.register_module()
class CdetrFixedReference(nn.Module):
    """DETR's choice: the unnormalised ``s = (0, 0)`` for every query.

    The paper's box is ``sigmoid(FFN(f) + [s, 0, 0])`` and its ``p_s`` the
    sine embedding of ``sigmoid(s)``, so every query gets the normalised
    point (0.5, 0.5): the box offset ``inverse_sigmoid(s)`` is 0 (DETR's box)
    and ``p_s`` is the image centre's embedding.

    Args:
        embed_dims (int): d (unused; every variant takes it).
    """

    def __init__(self, embed_dims: int) -> None:
        super().__init__()

    def forward(self, query_pos: Tensor) -> Tensor:
        """(bs, q, d) object queries -> (bs, q, 2) points, all 0.5."""
        bs, num_queries = query_pos.shape[:2]
        return query_pos.new_full((bs, num_queries, 2), 0.5)
