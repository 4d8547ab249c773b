"""Strict comparison of a checkpoint's state dict with a model's.

mmengine and mmdet load ``load_from``, ``tools/test.py`` and ``init_detector``
checkpoints with ``strict=False``: a checkpoint of another architecture loads
0 tensors and only a log line says so. :func:`match_state_dict` fails instead,
with the counts and the first offenders of each kind, unless the caller names
the tensors it means to leave out (fine-tuning with another class count).
"""
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

from .query_groups import PER_QUERY_KEYS, group_mismatch_hint

__all__ = ['CheckpointMismatchError', 'load_state_dict_strictly',
           'match_state_dict', 'selected_by', 'strip_prefixes']

# How many offenders of each kind the message lists.
_SHOWN = 5


class CheckpointMismatchError(ValueError, RuntimeError):
    """A checkpoint does not fit the model exactly; the message lists all.

    The one mismatch error of the package: strict loading (``load_from``,
    ``--resume``, ``tools/test.py``, ``init_detector``) and the converters
    raise it. A ``ValueError`` (the converters' type of before) and a
    ``RuntimeError`` (the loaders'), so handlers of either still catch it.
    The attributes are filled by the converters.

    Attributes:
        unmapped (dict[str, str]): Source key -> why it was not converted.
        missing (list[str]): Model keys no source key filled.
        unexpected (dict[str, str]): Converted key not in the model -> its
            source key.
        mismatched (dict[str, str]): Model key -> shape description.
        collisions (dict[str, list[str]]): Model key -> source keys that all
            mapped to it.
    """

    def __init__(self, message: str,
                 unmapped: Optional[Dict[str, str]] = None,
                 missing: Optional[List[str]] = None,
                 unexpected: Optional[Dict[str, str]] = None,
                 mismatched: Optional[Dict[str, str]] = None,
                 collisions: Optional[Dict[str, List[str]]] = None) -> None:
        super().__init__(message)
        self.unmapped = unmapped or {}
        self.missing = missing or []
        self.unexpected = unexpected or {}
        self.mismatched = mismatched or {}
        self.collisions = collisions or {}


def strip_prefixes(state_dict: Mapping[str, torch.Tensor],
                   revise_keys: Sequence[Tuple[str, str]] = (
                       (r'^module\.', ''), )) -> Dict[str, torch.Tensor]:
    """Apply mmengine's ``revise_keys`` (default: drop DDP's ``module.``)."""
    revised = dict(state_dict)
    for pattern, replacement in revise_keys:
        revised = {re.sub(pattern, replacement, k): v
                   for k, v in revised.items()}
    return revised


def selected_by(key: str, names: Iterable[str]) -> bool:
    """Whether ``key`` is one of ``names`` or inside a module named there."""
    return any(key == name or key.startswith(name + '.') for name in names)


def _listing(kind: str, keys: List[str]) -> str:
    shown = ', '.join(keys[:_SHOWN])
    more = f', ... ({len(keys) - _SHOWN} more)' if len(keys) > _SHOWN else ''
    return f'{len(keys)} {kind} ({shown}{more})'


def match_state_dict(model_state: Mapping[str, torch.Tensor],
                     checkpoint_state: Mapping[str, torch.Tensor],
                     source: str,
                     skip: Sequence[str] = ()) -> List[str]:
    """Check that ``checkpoint_state`` fills ``model_state`` exactly.

    Args:
        model_state (Mapping[str, Tensor]): The model's ``state_dict()``.
        checkpoint_state (Mapping[str, Tensor]): The checkpoint's tensors,
            prefixes already revised (:func:`strip_prefixes`).
        source (str): The checkpoint's name, for the message.
        skip (Sequence[str]): Tensor names or module prefixes (e.g.
            ``'bbox_head.fc_cls'``) deliberately left out: missing,
            unexpected or shape-mismatched keys under them are allowed. Each
            must name at least one key of the model or the checkpoint.

    Returns:
        list[str]: The checkpoint keys under ``skip`` (the caller must not
        load them), sorted.

    Raises:
        CheckpointMismatchError: Missing, unexpected or shape-mismatched keys
            outside ``skip``, or a ``skip`` entry that names nothing.
    """
    unknown = [name for name in skip
               if not any(selected_by(k, [name])
                          for k in (*model_state, *checkpoint_state))]
    if unknown:
        raise CheckpointMismatchError(
            f'load_from_skip names {unknown}, which match no tensor of the '
            f'model or of {source}; give tensor names or module prefixes '
            "such as 'bbox_head.fc_cls'")
    missing = [k for k in model_state
               if k not in checkpoint_state and not selected_by(k, skip)]
    unexpected = [k for k in checkpoint_state
                  if k not in model_state and not selected_by(k, skip)]
    mismatched = [
        f'{k}: checkpoint {tuple(v.shape)} vs model '
        f'{tuple(model_state[k].shape)}'
        for k, v in checkpoint_state.items()
        if k in model_state and hasattr(v, 'shape')
        and tuple(v.shape) != tuple(model_state[k].shape)
        and not selected_by(k, skip)
    ]
    if missing or unexpected or mismatched:
        hints = [group_mismatch_hint(k, checkpoint_state[k].shape[0],
                                     model_state[k].shape[0])
                 for k in PER_QUERY_KEYS
                 if k in model_state and k in checkpoint_state
                 and hasattr(checkpoint_state[k], 'shape')
                 and not selected_by(k, skip)
                 and checkpoint_state[k].shape != model_state[k].shape]
        problems = '; '.join(
            _listing(kind, keys) for kind, keys in (
                ('missing keys', missing), ('unexpected keys', unexpected),
                ('shape mismatches', mismatched)) if keys)
        loaded = sum(k in model_state for k in checkpoint_state)
        raise CheckpointMismatchError(
            f'Checkpoint {source} does not fit the model '
            f'({loaded} of {len(model_state)} model tensors named in it): '
            f'{problems}. Check that the config matches the checkpoint '
            '(architecture, num_classes); convert foreign checkpoints with '
            'tools/convert_checkpoint.py; to fine-tune with another class '
            "count set load_from_skip = ['bbox_head.fc_cls'] in the config."
            + ''.join(' ' + hint for hint in hints if hint))
    return sorted(k for k in checkpoint_state if selected_by(k, skip))


def load_state_dict_strictly(model: torch.nn.Module, checkpoint: dict,
                             source: str) -> None:
    """Copy ``checkpoint['state_dict']`` (or ``checkpoint``) into ``model``.

    Raises:
        CheckpointMismatchError: Missing, unexpected or mismatched tensors.
    """
    state = strip_prefixes(checkpoint.get('state_dict', checkpoint))
    match_state_dict(model.state_dict(), state, source)
    model.load_state_dict(state, strict=True)
