"""Group DETR checkpoints: K groups of object queries, and keeping group 0.

A model trained with ``model.group_detr=K`` (or the official GroupDETR
branch's ``--group_detr K``) stores K * N object-query rows; in eval mode it
only uses the first N. A K = 1 config refuses such a checkpoint (strict
loading: a shape mismatch); :func:`keep_first_group` is the explicit step
that makes it one (``tools/keep_first_group.py``), and
:func:`group_mismatch_hint` says so in the mismatch errors.
"""
from typing import Dict, Mapping, Optional, Tuple

from torch import Tensor

# Tensors with one row per object query: the query embedding and, with the
# decoder's ``reference='learned'`` ablation, the free reference points.
PER_QUERY_KEYS = ('query_embedding.weight', 'decoder.ref_point_embed.weight')


def keep_first_group(state_dict: Mapping[str, Tensor], num_queries: int
                     ) -> Tuple[Dict[str, Tensor], int]:
    """The state dict of a K = 1 model made of the first query group.

    Args:
        state_dict (Mapping[str, Tensor]): Weights of a ``group_detr=K``
            model (our keys).
        num_queries (int): N, the queries per group (``model.num_queries``).

    Returns:
        tuple[dict[str, Tensor], int]: The weights with the first N rows of
        every per-query tensor (copies), and the checkpoint's K.

    Raises:
        ValueError: No query embedding, rows not a multiple of N, the
            per-query tensors disagree on K, or K is already 1.
    """
    if 'query_embedding.weight' not in state_dict:
        raise ValueError('no query_embedding.weight: not a checkpoint of our '
                         'model (convert foreign ones with '
                         'tools/convert_checkpoint.py first)')
    groups = {}
    for key in PER_QUERY_KEYS:
        if key in state_dict:
            rows = state_dict[key].shape[0]
            if rows % num_queries:
                raise ValueError(f'{key} has {rows} rows, not a multiple of '
                                 f'num_queries={num_queries}')
            groups[key] = rows // num_queries
    if len(set(groups.values())) > 1:
        raise ValueError(f'the per-query tensors disagree on the number of '
                         f'groups: {groups}')
    num_groups = groups['query_embedding.weight']
    if num_groups == 1:
        raise ValueError(f'query_embedding.weight has {num_queries} rows: '
                         'already one group of num_queries')
    kept = dict(state_dict)
    for key in groups:
        kept[key] = state_dict[key][:num_queries].clone()  # group 0
    return kept, num_groups


def group_mismatch_hint(key: str, checkpoint_rows: int,
                        model_rows: int) -> Optional[str]:
    """What to do when a per-query tensor's rows differ by a whole factor.

    Args:
        key (str): The mismatched model key.
        checkpoint_rows (int): Its rows in the checkpoint.
        model_rows (int): Its rows in the model (K_model * N).

    Returns:
        str | None: The hint, or None when ``key`` holds no per-query rows
        or the rows are not a multiple of each other.
    """
    big, small = max(checkpoint_rows, model_rows), min(checkpoint_rows,
                                                        model_rows)
    if key not in PER_QUERY_KEYS or small == 0 or big % small:
        return None
    return (f'{key} has {checkpoint_rows} rows in the checkpoint and '
            f'{model_rows} in the model: Group DETR models hold group_detr x '
            'num_queries rows. Set model.group_detr to the value the '
            'checkpoint was trained with, or, to run a Group DETR checkpoint '
            'in a group_detr=1 config (what its eval mode computes), keep its '
            'first group explicitly: python tools/keep_first_group.py SRC DST '
            '--num-queries N.')
