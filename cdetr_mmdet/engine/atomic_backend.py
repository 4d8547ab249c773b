"""A local file backend whose writes are atomic (registered as ``cdetr_atomic_local``).

mmengine's ``LocalBackend.put`` writes the checkpoint in place, so a crash or a
full disk mid-write leaves a truncated ``epoch_N.pth`` that ``--resume auto``
then picks. Writing to a temporary file in the same folder, syncing it and
``os.replace``-ing it over the target leaves either the old file or the
complete new one.
"""
import os
import tempfile
from pathlib import Path
from typing import Union

from mmengine.fileio import register_backend
from mmengine.fileio.backends import LocalBackend


@register_backend('cdetr_atomic_local')
class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` with atomic ``put`` and ``put_text``.

    Use it for checkpoints with
    ``CheckpointHook(backend_args=dict(backend='cdetr_atomic_local'))``.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        """Write bytes to ``filepath`` atomically.

        Args:
            obj (bytes): Data to write.
            filepath (str | Path): Destination file.
        """
        filepath = os.fspath(filepath)
        folder = os.path.dirname(os.path.abspath(filepath))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-',
                                   suffix=os.path.basename(filepath))
        try:
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
