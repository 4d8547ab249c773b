"""A local file backend whose writes are atomic (registered as ``cdetr_atomic_local``).

mmengine's ``LocalBackend.put`` writes the checkpoint in place, so a crash or a
full disk mid-write leaves a truncated ``epoch_N.pth`` that ``--resume auto``
then picks. Writing to a temporary file in the same folder, syncing it and
``os.replace``-ing it over the target leaves either the old file or the
complete new one. A save killed with ``kill -9`` cannot remove its temporary
file: the next write into the same folder does (one writer per folder, as a
run's work_dir is). The result gets the permissions a plain ``open()`` would
give (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
"""
import glob
import io
import os
import tempfile
from pathlib import Path
from typing import Any, List, Union

from mmengine.fileio import register_backend
from mmengine.fileio.backends import LocalBackend

# Temporary files of a write in progress: ``.cdetr-partial-<random><name>``.
PARTIAL_PREFIX = '.cdetr-partial-'
# What earlier versions of this backend named them.
_LEGACY_PREFIX = '.tmp-'


def _default_file_mode() -> int:
    """``0o666`` less the process umask: what ``open(path, 'w')`` creates."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def remove_partial_files(folder: Union[str, Path]) -> List[str]:
    """Delete temporary files that killed writes left in ``folder``.

    Args:
        folder (str | Path): The folder a checkpoint is written into.

    Returns:
        list[str]: The paths removed.
    """
    removed = []
    for prefix in (PARTIAL_PREFIX, _LEGACY_PREFIX):
        for path in glob.glob(os.path.join(glob.escape(os.fspath(folder)),
                                           prefix + '*')):
            try:
                os.remove(path)
                removed.append(path)
            except FileNotFoundError:  # removed meanwhile
                pass
    return removed


@register_backend('cdetr_atomic_local')
class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` with atomic ``put`` and ``put_text``.

    Use it for checkpoints with
    ``CheckpointHook(backend_args=dict(backend='cdetr_atomic_local'))``.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        """Write bytes to ``filepath`` atomically.

        Leftover temporary files of earlier, killed writes into the same
        folder are removed first.

        Args:
            obj (bytes): Data to write.
            filepath (str | Path): Destination file.
        """
        filepath = os.fspath(filepath)
        folder = os.path.dirname(os.path.abspath(filepath))
        os.makedirs(folder, exist_ok=True)
        remove_partial_files(folder)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=PARTIAL_PREFIX,
                                   suffix=os.path.basename(filepath))
        try:
            os.fchmod(fd, _default_file_mode())
            with os.fdopen(fd, 'wb') as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def put_text(self, obj: str, filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically.

        Args:
            obj (str): Text to write.
            filepath (str | Path): Destination file.
            encoding (str): Text encoding. Defaults to 'utf-8'.
        """
        self.put(obj.encode(encoding), filepath)


def save_atomically(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save(obj)`` to ``path`` through :class:`AtomicLocalBackend`.

    For the checkpoint tools: a crash mid-write leaves the old file (or
    none), never a truncated one.

    Args:
        obj (Any): What to save, e.g. ``{'state_dict': ..., 'meta': ...}``.
        path (str | Path): The output file.
    """
    import torch  # the backend itself is torch-free
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    AtomicLocalBackend().put(buffer.getvalue(), path)
