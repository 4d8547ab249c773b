"""Strict comparison of a checkpoint's state dict with a model's.

mmengine and mmdet load ``load_from``, ``tools/test.py`` and ``init_detector``
checkpoints with ``strict=False``: a checkpoint of another architecture loads
0 tensors and only a log line says so. :func:`match_state_dict` fails instead,
with the counts and the first offenders of each kind, unless the caller names
the tensors it means to leave out (fine-tuning with another class count).

:func:`check_load_into` runs the same check inside our detector's
``_load_from_state_dict``, so every loader (torch's ``load_state_dict``,
mmengine's ``load_checkpoint`` and ``Runner.load_checkpoint``, mmdet's
``init_detector`` and ``DetInferencer``) refuses such a checkpoint before any
tensor is copied. What the model cannot know itself (the file's name, tensors
left out on purpose) travels with the state dict, in its root metadata
(:func:`annotate_load`).
"""
import logging
import re
from collections import OrderedDict
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Sequence,
                    Tuple)

import torch
from mmengine.logging import print_log

from .query_groups import PER_QUERY_KEYS, group_mismatch_hint

__all__ = ['CheckpointMismatchError', 'annotate_load', 'check_load_into',
           'load_state_dict_strictly', 'match_state_dict', 'selected_by', 'strip_prefixes']

# Key of our entry in a state dict's root metadata, ``state_dict._metadata['']``:
# torch's and mmengine's loaders keep ``_metadata`` when they copy or revise
# the state dict and hand ``_metadata['']`` to the root module's
# ``_load_from_state_dict``, so it reaches the detector's check unchanged.
LOAD_INFO_KEY = 'cdetr_load'

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


def annotate_load(checkpoint: Any, move_bare: bool = False,
                  **info: Any) -> None:
    """Record ``info`` for :func:`check_load_into` in ``checkpoint``, in place.

    Args:
        checkpoint (dict): A loaded checkpoint (with a ``state_dict``) or a
            state dict itself. A plain-dict ``state_dict`` is replaced by an
            ``OrderedDict`` copy (only those carry ``_metadata``).
        move_bare (bool): A bare plain-dict state dict cannot carry
            ``_metadata``: move it under ``checkpoint['state_dict']`` (which
            mmengine's loader reads first) if True, else record nothing.
            Only for a checkpoint about to be loaded into a model. Defaults
            to False.
        **info: Any of ``source`` (str: the file, for messages),
            ``left_out`` (list[str]: tensor names or module prefixes left out
            on purpose), ``left_out_by`` (str: who left them out, for the
            log), ``checked`` (bool: False skips the check, for
            ``CdetrStrictLoadHook(strict=False)``).
    """
    if not isinstance(checkpoint, dict):
        return
    if isinstance(checkpoint.get('state_dict'), Mapping):
        state = checkpoint['state_dict']
        if not hasattr(state, '_metadata'):
            state = checkpoint['state_dict'] = _with_metadata(state)
    elif isinstance(checkpoint, OrderedDict):
        state = checkpoint  # a bare state dict (torch.save(model.state_dict()))
        if not hasattr(state, '_metadata'):
            state._metadata = OrderedDict()
    elif move_bare:  # a bare plain dict cannot carry attributes
        state = _with_metadata(checkpoint)
        checkpoint.clear()
        checkpoint['state_dict'] = state
    else:
        return
    root = dict(state._metadata.get('', {}))
    root[LOAD_INFO_KEY] = {**root.get(LOAD_INFO_KEY, {}), **info}
    state._metadata[''] = root


def _with_metadata(state: Mapping) -> 'OrderedDict[str, Any]':
    copy = OrderedDict(state)
    copy._metadata = OrderedDict(getattr(state, '_metadata', {}))
    return copy


def check_load_into(module: torch.nn.Module, state_dict: Mapping[str, Any],
                    prefix: str, local_metadata: Mapping[str, Any]) -> None:
    """Refuse to load ``state_dict`` into ``module`` unless it fits exactly.

    Called from ``module._load_from_state_dict`` (before any tensor is
    copied) with that method's arguments. Keys outside ``prefix`` belong to
    an enclosing module and are not checked.

    Args:
        module (nn.Module): The module being loaded.
        state_dict (Mapping[str, Tensor]): The state dict as the loader
            passes it (``prefix`` + the module's keys).
        prefix (str): The module's prefix in it (``''`` at the root).
        local_metadata (Mapping): The module's metadata entry, carrying
            :func:`annotate_load`'s ``info`` under :data:`LOAD_INFO_KEY`.

    Raises:
        CheckpointMismatchError: Missing, unexpected or shape-mismatched keys
            outside the tensors the state dict says it leaves out.
    """
    info = local_metadata.get(LOAD_INFO_KEY, {})
    if not info.get('checked', True):
        return
    source = info.get('source') or (
        f'(a state dict without file name, loaded into '
        f'{type(module).__name__})')
    left_out = list(info.get('left_out', ()))
    model_state = module.state_dict()
    checkpoint_state = {k[len(prefix):]: v for k, v in state_dict.items()
                        if k.startswith(prefix)}
    match_state_dict(model_state, checkpoint_state, source, left_out)
    fresh = [k for k in model_state
             if k not in checkpoint_state and selected_by(k, left_out)]
    by = info.get('left_out_by')
    if fresh and by != 'load_from_skip':  # CdetrStrictLoadHook logs its own
        print_log(
            f'{source} leaves out {left_out} on purpose'
            + (f' ({by})' if by else '') + f': {len(fresh)} model tensors '
            f'keep their initialisation ({", ".join(fresh)})',
            logger='current', level=logging.WARNING)
