"""Checkpoints in one room: safe unpickling, strict checks, atomic saving.

- :mod:`.safety`: torch ``weights_only`` allow-list of mmengine's data-only
  globals and the safe local loader (``import cdetr_mmdet`` registers both).
- :mod:`.state_dict_check`: the one :class:`CheckpointMismatchError` and the
  strict key / shape comparison every loader uses.
- :mod:`.strict_load_hook`: ``CdetrStrictLoadHook`` (``load_from``,
  ``--resume``, ``tools/test.py``).
- :mod:`.checkpoint_hook`: ``CdetrCheckpointHook`` (save, then prune; no
  NaN weights; resume falls back to the newest complete checkpoint).
- :mod:`.atomic_backend`: the ``cdetr_atomic_local`` file backend
  (temporary file, then rename).
- :mod:`.query_groups`: Group DETR checkpoints (K * N object-query rows):
  the mismatch hint every loader and converter adds, and
  :func:`keep_first_group`, the explicit step ``tools/keep_first_group.py``
  takes to run one in a ``group_detr=1`` config.

The converters of other formats sit beside it in :mod:`cdetr_mmdet.convert`.
"""
from .atomic_backend import (AtomicLocalBackend, remove_partial_files,
                             save_atomically)
from .checkpoint_hook import (CdetrCheckpointHook, NonFiniteWeightsError,
                              newest_complete_checkpoint)
from .query_groups import keep_first_group
from .safety import (UnsafeCheckpointError, register_safe_globals,
                     register_safe_local_loader, safe_torch_load)
from .state_dict_check import (CheckpointMismatchError,
                               load_state_dict_strictly, match_state_dict)
from .strict_load_hook import CdetrStrictLoadHook

__all__ = [
    'AtomicLocalBackend', 'remove_partial_files', 'save_atomically', 'CdetrCheckpointHook',
    'NonFiniteWeightsError', 'newest_complete_checkpoint',
    'UnsafeCheckpointError', 'register_safe_globals',
    'register_safe_local_loader', 'safe_torch_load',
    'CheckpointMismatchError', 'load_state_dict_strictly',
    'match_state_dict', 'CdetrStrictLoadHook', 'keep_first_group'
]
