"""Read source checkpoints safely, check conversions strictly, save results.

Reading never unpickles arbitrary objects: ``.safetensors`` files go through
safetensors, everything else through ``torch.load(weights_only=True)``
(:func:`~cdetr_mmdet.checkpoint.safety.safe_torch_load`), which refuses a
file referencing any global outside a data-only allow-list and names it.
"""
import argparse
import contextlib
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from ..checkpoint import CheckpointMismatchError, safe_torch_load
from .key_rules import Renamed
from ..checkpoint.query_groups import group_mismatch_hint

PathLike = Union[str, Path]

# Where each source keeps its weights inside the checkpoint (None: the file
# is the state dict itself).
STATE_DICT_KEY = {'official': 'model', 'mmdet': 'state_dict', 'hf': None}

# Hugging Face model folders: single files first, then sharded indexes.
_HF_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin',
                    'model.safetensors.index.json',
                    'pytorch_model.bin.index.json')


def _read_file(path: Path, source: str) -> Any:
    """Load one file with safetensors or weights-only ``torch.load``."""
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file
        return load_file(str(path))
    # Official training checkpoints also store the command-line ``args``, an
    # ``argparse.Namespace``: a plain attribute bag whose unpickling only
    # fills ``__dict__`` (its values pass the same weights-only checks).
    allow = (torch.serialization.safe_globals([argparse.Namespace])
             if source == 'official' else contextlib.nullcontext())
    with allow:
        return safe_torch_load(path)


def _hf_weight_files(folder: Path) -> Tuple[List[Path], Optional[Dict[str, str]]]:
    """The weight file(s) of a Hugging Face model folder, and for a sharded
    one its index's ``weight_map`` (tensor name -> shard file name)."""
    for name in _HF_WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if name.endswith('.index.json'):  # sharded: one file per shard
                return _shards(path)
            return [path], None
    raise FileNotFoundError(
        f'{str(folder)!r} holds none of {", ".join(_HF_WEIGHT_FILES)}')


def _shards(index: Path) -> Tuple[List[Path], Dict[str, str]]:
    """The shard files a ``*.index.json`` names (all present) and its weight map."""
    try:
        weight_map = json.loads(index.read_text())['weight_map']
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(
            f'{str(index)!r} is not a sharded checkpoint index: expected a JSON '
            "object whose 'weight_map' maps each tensor name to its shard file "
            f'({type(err).__name__}: {err})') from None
    missing = [shard for shard in shards if not (index.parent / shard).is_file()]
    if missing:
        raise FileNotFoundError(
            f'{str(index)!r} names {len(shards)} shards, {len(missing)} of them '
            f'missing in {str(index.parent)!r}: {missing[:5]}; download every '
            'file of the model folder')
    return [index.parent / shard for shard in shards], weight_map


def _check_shard(file: Path, keys: Iterable[str],
                 weight_map: Mapping[str, str]) -> None:
    """A shard must hold exactly the tensors its index assigns to it."""
    listed = {k for k, shard in weight_map.items() if shard == file.name}
    missing, extra = sorted(listed - set(keys)), sorted(set(keys) - listed)
    if missing or extra:
        raise ValueError(
            f'{str(file)!r} does not hold the tensors its index assigns to it: '
            f'{len(missing)} listed but absent {missing[:5]}, {len(extra)} '
            f'present but not listed {extra[:5]}; the shard or the index is '
            'from another download')


def load_source_state_dict(path: PathLike, source: str) -> Dict[str, Tensor]:
    """Read the weights of a checkpoint of the given source.

    Args:
        path (str | Path): ``.pth`` / ``.bin`` / ``.safetensors`` file, or a
            Hugging Face model folder (``save_pretrained`` output, single
            file or sharded with an ``*.index.json``). A ``.safetensors``
            file is the state dict itself for every source (safetensors
            files hold flat tensor maps, no wrapper).
        source (str): ``'official'`` (``{'model': ...}``), ``'mmdet'``
            (``{'state_dict': ...}``) or ``'hf'`` (a bare state dict).

    Returns:
        dict[str, Tensor]: The weights.

    Raises:
        UnsafeCheckpointError: The file needs arbitrary code to load.
        ValueError: The file is not laid out as ``source`` says, or a shard
            does not hold what its index lists.
        FileNotFoundError: A folder without weights, or a missing shard.
    """
    if source not in STATE_DICT_KEY:
        raise ValueError(f'unknown source {source!r}; expected one of '
                         f'{sorted(STATE_DICT_KEY)}')
    path = Path(path)
    files, weight_map = _hf_weight_files(path) if path.is_dir() else ([path], None)
    state_dict: Dict[str, Any] = {}
    for file in files:
        obj = _read_file(file, source)
        wrapper = None if file.suffix == '.safetensors' else STATE_DICT_KEY[source]
        if wrapper is not None:
            if not isinstance(obj, Mapping) or wrapper not in obj:
                found = sorted(obj) if isinstance(obj, Mapping) else type(obj)
                raise ValueError(
                    f'{str(file)!r} is not a {source} checkpoint: expected a '
                    f'dict with key {wrapper!r}, found {found}')
            obj = obj[wrapper]
        if not isinstance(obj, Mapping):
            raise ValueError(f'{str(file)!r}: expected a state dict, got '
                             f'{type(obj).__name__}')
        if weight_map is not None:
            _check_shard(file, obj, weight_map)
        state_dict.update(obj)
    not_tensors = sorted(k for k, v in state_dict.items()
                         if not isinstance(v, Tensor))
    if not_tensors:
        raise ValueError(f'{str(path)!r} ({source}): entries that are not '
                         f'tensors (nested or wrapped checkpoint?): '
                         f'{not_tensors}')
    return state_dict


def _section(title: str, lines: List[str]) -> List[str]:
    """'  N title:' and the lines indented below it; nothing if empty."""
    if not lines:
        return []
    return [f'  {len(lines)} {title}:', *[f'    {line}' for line in lines]]


def check_and_fill(renamed: Renamed, target: Mapping[str, Tensor],
                   description: str) -> Dict[str, Tensor]:
    """Check a converted state dict against the model's, strictly.

    The only keys filled in are BatchNorm ``num_batches_tracked`` counters
    (0), which the official and Hugging Face frozen BatchNorm do not have;
    our backbone BatchNorm is frozen in eval mode, so they are never read.

    Args:
        renamed (Renamed): The converted weights with provenance.
        target (Mapping[str, Tensor]): The model's ``state_dict()``.
        description (str): What was converted, for the error message.

    Returns:
        dict[str, Tensor]: The weights in the model's key order.

    Raises:
        CheckpointMismatchError: Listing every unmapped source key, model
            key left unfilled, converted key the model lacks, shape
            mismatch and key collision.
    """
    tensors = dict(renamed.tensors)
    for key, value in target.items():
        if key.endswith('.num_batches_tracked') and key not in tensors:
            tensors[key] = torch.zeros_like(value)
    missing = [k for k in target if k not in tensors]
    unexpected = {k: renamed.origins.get(k, k) for k in tensors
                  if k not in target}
    mismatched = {
        k: f'{tuple(tensors[k].shape)} from {renamed.origins.get(k, k)} '
        f'vs {tuple(target[k].shape)} in the model'
        for k in target if k in tensors and tensors[k].shape != target[k].shape
    }
    unmapped = [f'{k}: {why}' for k, why in sorted(renamed.unmapped.items())]
    extra = [f'{k} (from {o})' for k, o in sorted(unexpected.items())]
    shapes = [f'{k}: {d}' for k, d in mismatched.items()]
    twice = [f'{k}: {", ".join(v)}'
             for k, v in sorted(renamed.collisions.items())]
    lines = (_section('source keys not converted', unmapped) +
             _section('model keys not filled', missing) +
             _section('converted keys the model does not have', extra) +
             _section('shape mismatches', shapes) +
             _section('keys written by several source keys', twice))
    if lines:
        hint = []
        if 'bbox_head.fc_cls.weight' in mismatched:
            rows = tensors['bbox_head.fc_cls.weight'].shape[0]
            classes = target['bbox_head.fc_cls.weight'].shape[0]
            hint = [f'  The class head has {rows} rows, the model {classes} '
                    'classes. Official / Hugging Face heads (91 rows by COCO '
                    'category id) are reduced to the 80 COCO classes, or '
                    'kept whole with --keep-91-classes (which builds the '
                    'model with num_classes=91).']
        hint += [f'  {text}' for key in mismatched for text in [
            group_mismatch_hint(key, tensors[key].shape[0],
                                target[key].shape[0])] if text]
        raise CheckpointMismatchError(
            '\n'.join([f'{description} does not match the model exactly:',
                       *lines, *hint]),
            unmapped=renamed.unmapped, missing=missing,
            unexpected=unexpected, mismatched=mismatched,
            collisions=renamed.collisions)
    return {k: tensors[k] for k in target}


def save_checkpoint(state_dict: Mapping[str, Tensor], path: PathLike,
                    meta: Mapping[str, Any]) -> None:
    """Write ``{'state_dict': ..., 'meta': ...}`` as mmengine reads it.

    Only tensors and plain Python values are written, so the file loads
    with ``torch.load(weights_only=True)`` (mmengine's ``load_checkpoint``,
    ``load_from``, ``tools/test.py``, ``init_detector``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': dict(state_dict), 'meta': dict(meta)}, path)
