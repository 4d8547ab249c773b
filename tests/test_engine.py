"""Atomic checkpoint writes and the CPU DDP wrapper."""
import subprocess
import sys

import pytest
import torch
from mmengine.fileio import get_file_backend

from cdetr_mmdet.engine import AtomicLocalBackend
from conftest import ROOT


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


DDP_SCRIPT = r'''
import os, sys
import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.model import BaseModel, MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from cdetr_mmdet.engine import setup_cpu_distributed

class Tiny(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)
    def forward(self, inputs, mode='loss'):
        return dict(loss=self.linear(inputs).square().mean())

os.environ.update(RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT=sys.argv[1])
cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))  # as default_runtime.py
setup_cpu_distributed(cfg, 'pytorch')  # what tools/train.py does on CPU
assert dist.is_initialized() and dist.get_backend() == 'gloo'
assert cfg.model_wrapper_cfg == dict(type='CdetrCPUDistributedDataParallel')
assert cfg.env_cfg.dist_cfg.backend == 'gloo'
try:  # the wrapper mmengine would use: refuses device_ids for a CPU module
    MMDistributedDataParallel(module=Tiny(), device_ids=[0])
except ValueError as error:
    assert 'device_ids' in str(error), error
else:
    raise AssertionError('stock MMDistributedDataParallel accepted device_ids on CPU')
# The runner passes device_ids=[LOCAL_RANK]: ours drops it and trains.
model = MODEL_WRAPPERS.build(cfg.model_wrapper_cfg,
                             default_args=dict(module=Tiny(), device_ids=[0]))
assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
assert model.device_ids is None
model.module.linear.weight.grad = None
model(torch.ones(3, 2))['loss'].backward()  # DDP's reducer all-reduces the gradient
torch.testing.assert_close(model.module.linear.weight.grad,
                           2 * (model.module.linear(torch.ones(1, 2)).detach()) * torch.ones(1, 2))
try:
    setup_cpu_distributed(Config(dict()), 'slurm')
except RuntimeError as error:
    print(error)
dist.destroy_process_group()
'''


@pytest.mark.skipif(torch.cuda.is_available(), reason='setup_cpu_distributed is a no-op with CUDA')
def test_cpu_ddp_wrapper_trains_where_mmengines_refuses_device_ids():
    """setup_cpu_distributed makes a gloo group and selects our wrapper, which takes the
    runner's device_ids=[0] for a CPU module (mmengine's own raises) and all-reduces grads."""
    out = subprocess.run([sys.executable, '-c', DDP_SCRIPT, '29531'], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == (
        '--launcher slurm needs CUDA; on CPU start the processes with tools/dist_train.sh '
        '(torchrun, --launcher pytorch)')
