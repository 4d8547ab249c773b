"""Load mmengine checkpoints with ``torch.load(..., weights_only=True)``.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``: the pickle
may only reference allow-listed globals. mmengine 0.10.7 calls ``torch.load``
without ``weights_only``, so ``load_checkpoint`` (``load_from``,
``tools/test.py``, ``init_detector``) and ``resume=True`` refuse checkpoints
that mmengine's own ``CheckpointHook`` just wrote. Instead of switching the
safety off, :func:`register_safe_globals` allow-lists the few data-only globals
such a checkpoint references (measured on a ``Runner``-saved checkpoint):

- ``mmengine.logging.history_buffer.HistoryBuffer``: the values of
  ``message_hub['log_scalars']``. Its ``__setstate__`` only stores arrays
  and the statistics methods below.
- ``builtins.getattr``, bound to :func:`_history_buffer_getattr`, which only
  returns ``HistoryBuffer.min/max/current/mean``: ``HistoryBuffer`` pickles
  its statistics methods as ``getattr(HistoryBuffer, 'min')``. The real
  ``getattr`` is never allow-listed.
- ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``:
  numpy arrays (``HistoryBuffer._log_history``/``_count_history``).
  ``numpy.core.multiarray._reconstruct`` is the same function as pickled by
  numpy 1.x.
- ``numpy._core.multiarray.scalar`` (and its numpy 1.x name
  ``numpy.core.multiarray.scalar``): numpy scalars such as
  ``message_hub['runtime_info']['eta']`` (a ``np.float64``).
- The concrete dtype classes of booleans, integers, floats and complex numbers
  (``numpy.dtypes.Float64DType``, ``Int64DType``, ...): the unpickler only
  calls ``__setstate__`` on instances of allow-listed types, and a
  ``np.dtype('f8')`` is an instance of ``Float64DType``. Object, void,
  string and datetime dtypes stay refused.

Everything else in an mmengine checkpoint (``collections.OrderedDict`` and
``Counter``, tensors, builtins containers) is already allowed by torch.
"""
import os
import pickle
import re
from typing import Any, List

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _np_multiarray

__all__ = [
    'register_safe_globals', 'register_safe_local_loader', 'safe_torch_load',
    'UnsafeCheckpointError'
]

# The statistics methods HistoryBuffer pickles by reference.
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')

# Type codes of the data-only dtypes: bool, integers, floats, complex.
_DATA_DTYPE_CODES = '?' + np.typecodes['AllInteger'] + np.typecodes['AllFloat']

_registered = False


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` during weights-only loading.

    Only resolves ``getattr(HistoryBuffer, name)`` for its statistics methods,
    which is all an mmengine ``MessageHub`` pickle asks for.
    """
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'builtins.getattr({obj!r}, {name!r}) is refused: only '
        f'HistoryBuffer.{{{",".join(_HISTORY_BUFFER_METHODS)}}} are allowed')


def _safe_globals() -> List[Any]:
    """Return the allow-list, as accepted by ``add_safe_globals``."""
    dtype_classes = sorted({type(np.dtype(code))
                            for code in _DATA_DTYPE_CODES},
                           key=lambda cls: cls.__name__)
    return [
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
        *dtype_classes,
        # Both names: numpy 2 pickles ``numpy._core``, numpy 1 ``numpy.core``.
        (_np_multiarray._reconstruct, 'numpy._core.multiarray._reconstruct'),
        (_np_multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (_np_multiarray.scalar, 'numpy._core.multiarray.scalar'),
        (_np_multiarray.scalar, 'numpy.core.multiarray.scalar'),
    ]


def register_safe_globals() -> None:
    """Allow-list the globals of mmengine checkpoints for weights-only loads.

    Idempotent; a no-op on torch < 2.4, which has no allow-list (and does not
    default to weights-only loading).
    """
    global _registered
    if _registered or not hasattr(torch.serialization, 'add_safe_globals'):
        return
    torch.serialization.add_safe_globals(_safe_globals())
    _registered = True


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that cannot be loaded without running arbitrary code."""


# Where torch's weights-only unpickler names the global it refused.
_REFUSED_GLOBAL_PATTERNS = (
    r'(builtins\.getattr\(.+?\)) is refused',
    r'GLOBAL (\S+) was not an allowed global',
    r'unsupported GLOBAL (\S+) whose module',
    r'reduce for unrecognized function (.+?)(?: which belongs|$)',
    r'types allowlisted via `add_safe_globals`, but got (.+?)$',
    r'classes allowlisted via `add_safe_globals` but got (.+?)$',
)


def _refused_globals(path: Any, message: str) -> List[str]:
    """Name the globals that made ``torch.load`` refuse ``path``."""
    names = []
    for pattern in _REFUSED_GLOBAL_PATTERNS:
        match = re.search(pattern, message, flags=re.MULTILINE)
        if match:
            name = match.group(1).strip()
            # torch strips ``builtins.`` from the names it reports.
            names.append(name if '.' in name or '<' in name else
                         f'builtins.{name}')
            break
    if isinstance(path, (str, os.PathLike)):
        try:  # static scan of the pickle: every global not allow-listed
            names += torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # e.g. a legacy (non-zip) checkpoint
            pass
    return list(dict.fromkeys(names)) or ['<unknown>']


def safe_torch_load(path: Any, map_location: Any = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)`` with mmengine's globals allowed.

    Args:
        path (str | os.PathLike | file-like): The checkpoint.
        map_location (str | torch.device | callable | dict): As in
            ``torch.load``. Defaults to ``'cpu'``.

    Returns:
        Any: The loaded object.

    Raises:
        UnsafeCheckpointError: The file references a global outside the
            allow-list, i.e. loading it would run arbitrary code.
    """
    register_safe_globals()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _refused_globals(path, str(error))
        raise UnsafeCheckpointError(
            f'Refused to load checkpoint {str(path)!r}: it references '
            f'{", ".join(refused)}, outside the allow-list of data-only '
            'types. Loading it would need arbitrary code execution, so it '
            'was not loaded: the file is unsafe. Use a checkpoint from a '
            'source you trust.') from None


# mmengine logs "Loads checkpoint by {name[10:]} backend": "safe_local".
def load_from_safe_local(filename: str, map_location: Any) -> Any:
    """mmengine's local-file checkpoint loader with our refusal message.

    Same as ``mmengine.runner.checkpoint.load_from_local`` (which calls
    ``torch.load`` with torch's weights-only default), except that a refused
    file raises :class:`UnsafeCheckpointError` naming the globals instead of
    torch's advice to re-run with ``weights_only=False``.
    """
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'Checkpoint {filename!r} does not exist')
    return safe_torch_load(filename, map_location=map_location)


# A CheckpointLoader prefix (a regex, matched at the path's start) for local
# paths: anything without a URL scheme such as ``https://`` or
# ``open-mmlab:s3://``. mmengine tries prefixes in reverse string order, so
# the URL schemes come first, this one next, and mmengine's own catch-all
# ``''`` (which this one leaves registered) last.
LOCAL_PATH_PREFIX = r'(?!(\S+:)?[A-Za-z][\w+.-]*://)'


def register_safe_local_loader() -> None:
    """Make every mmengine load of a local checkpoint go through ours.

    ``load_from``, ``--resume``, ``tools/test.py``, mmdet's
    ``init_detector`` and ``DetInferencer`` all load local files through
    mmengine's ``CheckpointLoader``. Registering :data:`LOCAL_PATH_PREFIX`
    (a new prefix, tried before mmengine's catch-all ``''``) routes them to
    :func:`load_from_safe_local`; URL schemes keep their loaders.
    Idempotent.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    if LOCAL_PATH_PREFIX not in CheckpointLoader._schemes:
        CheckpointLoader.register_scheme(prefixes=LOCAL_PATH_PREFIX,
                                         loader=load_from_safe_local)
