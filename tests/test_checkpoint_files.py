"""Checkpoint files are never lost, keep their permissions, load strictly or fail.

File-level faults of docs/reliability.md (## Checkpoints and training): the
atomic writer under a full disk and ``kill -9``, permissions, leftover
temporary files, the ``last_checkpoint`` fallback, the strict-load message,
and our unsafe-checkpoint message on mmengine's, mmdet's and our loaders.
"""
import errno
import os
import signal
import stat
import subprocess
import sys

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import _load_checkpoint, find_latest_checkpoint

from cdetr_mmdet.checkpoint.safety import UnsafeCheckpointError
from cdetr_mmdet.engine import (AtomicLocalBackend, CheckpointMismatchError,
                                match_state_dict)
from cdetr_mmdet.checkpoint.checkpoint_hook import repair_last_checkpoint
from conftest import ROOT


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_checkpoint_gets_the_umask_permissions(tmp_path, umask_022):
    AtomicLocalBackend().put(b'weights', tmp_path / 'epoch_1.pth')
    mode = stat.S_IMODE((tmp_path / 'epoch_1.pth').stat().st_mode)
    assert oct(mode) == oct(0o644)  # mkstemp alone would give 0o600


def test_full_disk_mid_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'old complete checkpoint')
    real_fdopen = os.fdopen

    class FullDisk:
        """A file that accepts half of the data, then ENOSPC."""

        def __init__(self, fd, mode):
            self.file = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            self.file.write(data[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, 'fdopen', FullDisk)
    with pytest.raises(OSError, match='No space left on device'):
        AtomicLocalBackend().put(b'new checkpoint bytes', target)
    assert target.read_bytes() == b'old complete checkpoint'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth']


KILLED_SAVE = r'''
import os, signal, sys
from cdetr_mmdet.checkpoint.atomic_backend import AtomicLocalBackend
def killed(fd):  # the data is written, the rename has not happened yet
    os.kill(os.getpid(), signal.SIGKILL)
os.fsync = killed
AtomicLocalBackend().put(b'new' * 1000, sys.argv[1])
'''


def test_kill_9_mid_save_leaves_the_old_file_and_the_next_save_cleans_up(
        tmp_path):
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'old complete checkpoint')
    out = subprocess.run([sys.executable, '-c', KILLED_SAVE, str(target)],
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == -signal.SIGKILL
    assert target.read_bytes() == b'old complete checkpoint'
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith('.cdetr-partial-')

    AtomicLocalBackend().put(b'next', tmp_path / 'epoch_2.pth')
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'epoch_1.pth', 'epoch_2.pth']


@pytest.mark.parametrize('content', ['', 'gone/iter_9.pth'])
def test_empty_or_dangling_last_checkpoint_falls_back(tmp_path, content):
    for step in (2, 4):
        torch.save({'state_dict': {}}, tmp_path / f'iter_{step}.pth')
    os.utime(tmp_path / 'iter_2.pth', (1, 1))  # iter_4 is the newest
    (tmp_path / 'iter_6.pth').write_bytes(b'truncated')  # not complete
    (tmp_path / 'last_checkpoint').write_text(content)
    logger = MMLogger.get_instance('cdetr_test_last_checkpoint')
    warnings = []
    logger.warning = warnings.append

    repaired = repair_last_checkpoint(str(tmp_path), logger)

    newest = str(tmp_path / 'iter_4.pth')
    assert repaired == newest
    assert find_latest_checkpoint(str(tmp_path)) == newest
    what = (f"names {content!r}, which does not exist" if content
            else 'is empty')
    assert warnings == [
        f'{tmp_path / "last_checkpoint"} {what}; resuming from the newest '
        f'complete checkpoint {newest} instead']


def test_last_checkpoint_without_any_checkpoint_is_removed(tmp_path):
    (tmp_path / 'last_checkpoint').write_text('')
    logger = MMLogger.get_instance('cdetr_test_last_checkpoint')
    warnings = []
    logger.warning = warnings.append
    assert repair_last_checkpoint(str(tmp_path), logger) is None
    assert not (tmp_path / 'last_checkpoint').exists()
    assert warnings == [
        f'{tmp_path / "last_checkpoint"} is empty and {tmp_path} holds no '
        'complete checkpoint: nothing to resume, training starts from scratch']


def _state(**shapes):
    return {k: torch.zeros(v) for k, v in shapes.items()}


def test_mismatch_message_gives_counts_and_first_offenders():
    model = _state(**{'backbone.w': (2, ), 'bbox_head.fc_cls.weight': (5, 8),
                      'bbox_head.fc_cls.bias': (5, ), 'query.weight': (3, 8)})
    ckpt = _state(**{'backbone.w': (2, ), 'bbox_head.fc_cls.weight': (4, 8),
                     'bbox_head.fc_cls.bias': (4, ), **{
                         f'other.{i}': (1, ) for i in range(7)}})
    with pytest.raises(CheckpointMismatchError) as error:
        match_state_dict(model, ckpt, 'ckpt.pth')
    assert str(error.value) == (
        'Checkpoint ckpt.pth does not fit the model (3 of 4 model tensors '
        'named in it): 1 missing keys (query.weight); 7 unexpected keys '
        '(other.0, other.1, other.2, other.3, other.4, ... (2 more)); '
        '2 shape mismatches (bbox_head.fc_cls.weight: checkpoint (4, 8) vs '
        'model (5, 8), bbox_head.fc_cls.bias: checkpoint (4,) vs model '
        '(5,)). Check that the config matches the checkpoint (architecture, '
        'num_classes); convert foreign checkpoints with '
        'tools/convert_checkpoint.py; to fine-tune with another class count '
        "set load_from_skip = ['bbox_head.fc_cls'] in the config.")


def test_skip_names_exactly_the_tensors_left_out():
    model = _state(**{'backbone.w': (2, ), 'bbox_head.fc_cls.weight': (5, 8),
                      'bbox_head.fc_cls.bias': (5, )})
    ckpt = _state(**{'backbone.w': (2, ), 'bbox_head.fc_cls.weight': (4, 8),
                     'bbox_head.fc_cls.bias': (4, )})
    assert match_state_dict(model, ckpt, 'c', skip=['bbox_head.fc_cls']) == [
        'bbox_head.fc_cls.bias', 'bbox_head.fc_cls.weight']
    with pytest.raises(CheckpointMismatchError,
                       match=r"load_from_skip names \['bbox_head.fc_clss'\], "
                       'which match no tensor'):
        match_state_dict(model, ckpt, 'c', skip=['bbox_head.fc_clss'])


class RunsCodeOnLoad:
    def __reduce__(self):
        return os.system, ('true', )


UNSAFE_MESSAGE = (
    "Refused to load checkpoint {path!r}: it references posix.system, outside "
    'the allow-list of data-only types. Loading it would need arbitrary code '
    'execution, so it was not loaded: the file is unsafe. Use a checkpoint '
    'from a source you trust.')


@pytest.fixture
def unsafe_checkpoint(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': RunsCodeOnLoad()}, path)
    return path


def test_unsafe_message_on_mmengine_loader(unsafe_checkpoint):
    # Runner load_from / resume / test, mmdet init_detector and
    # DetInferencer all load local files through this function.
    with pytest.raises(UnsafeCheckpointError) as error:
        _load_checkpoint(str(unsafe_checkpoint), map_location='cpu')
    assert str(error.value) == UNSAFE_MESSAGE.format(
        path=str(unsafe_checkpoint))
    assert 'weights_only' not in str(error.value)
