"""Atomic checkpoint writes and the CPU DDP wrapper."""
import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.registry import MODEL_WRAPPERS

from cdetr_mmdet.engine import AtomicLocalBackend


def test_backend_is_registered_and_writes(tmp_path):
    backend = get_file_backend(str(tmp_path),
                               backend_args=dict(backend='cdetr_atomic_local'))
    assert isinstance(backend, AtomicLocalBackend)
    backend.put(b'abc', tmp_path / 'sub' / 'x.pth')
    backend.put_text('epoch_1.pth', tmp_path / 'last_checkpoint')
    assert (tmp_path / 'sub' / 'x.pth').read_bytes() == b'abc'
    assert (tmp_path / 'last_checkpoint').read_text() == 'epoch_1.pth'


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'old complete checkpoint')
    backend = AtomicLocalBackend()

    def broken_fsync(fd):
        raise OSError('disk full')

    monkeypatch.setattr('os.fsync', broken_fsync)
    with pytest.raises(OSError, match='disk full'):
        backend.put(b'new', target)
    assert target.read_bytes() == b'old complete checkpoint'
    assert [p.name for p in tmp_path.iterdir()] == ['epoch_1.pth']


def test_cpu_ddp_wrapper_is_registered():
    wrapper = MODEL_WRAPPERS.get('CdetrCPUDistributedDataParallel')
    assert wrapper is not None
    assert issubclass(wrapper, torch.nn.parallel.DistributedDataParallel)
