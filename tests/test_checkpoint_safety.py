"""Weights-only loading of mmengine checkpoints (cdetr_mmdet/checkpoint/safety.py).

torch >= 2.6 loads with ``weights_only=True`` by default and mmengine 0.10.7
does not pass ``weights_only``: these tests check that checkpoints mmengine
writes load through plain ``torch.load``, ``load_checkpoint`` and
``Runner(resume=True)`` once the allow-list is registered, and that files
needing code execution are still refused, without side effects.
"""
import builtins
import io
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub, MMLogger
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner, load_checkpoint
from mmengine.visualization import Visualizer

from cdetr_mmdet.checkpoint.safety import (UnsafeCheckpointError,
                                           register_safe_globals,
                                           safe_torch_load)

REPO_ROOT = Path(__file__).resolve().parents[1]

DATASET_META = dict(
    classes=('circle', 'square'), palette=[(220, 20, 60), (0, 0, 142)])


class ToyModel(BaseModel):
    """A BaseModel with one Linear layer; batches are dicts of tensors."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels, mode='tensor'):
        outputs = self.linear(inputs)  # (bs, 1)
        if mode == 'loss':
            return dict(loss=((outputs - labels)**2).mean())
        return outputs


class ToyDataset(torch.utils.data.Dataset):
    metainfo = DATASET_META

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return dict(inputs=torch.full((2, ), float(index)),
                    labels=torch.ones(1))


def mmengine_shaped_checkpoint():
    """A dict shaped like a CheckpointHook checkpoint, from real objects."""
    model = ToyModel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(2, 2), torch.ones(2, 1), mode='loss')['loss'].backward()
    optimizer.step()
    message_hub = MessageHub(f'checkpoint_safety_{id(model)}')
    for loss in (0.5, 0.25):
        message_hub.update_scalar('train/loss', loss)
    message_hub.update_info('eta', np.float64(12.5))
    message_hub.update_info('history', np.arange(4, dtype=np.int64))
    message_hub.update_info('dataset_meta', DATASET_META)
    return dict(
        meta=dict(epoch=1, iter=2, seed=0, dataset_meta=DATASET_META),
        state_dict=OrderedDict(model.state_dict()),
        message_hub=message_hub.state_dict(),
        optimizer=optimizer.state_dict(),
        param_schedulers=[dict(milestones={1: 1}, base_values=[1e-3])])


class RunsCodeOnLoad:
    """Unpickling calls ``reducer(*args)``: the marker file proves it ran."""

    def __init__(self, reducer, args):
        self.reducer, self.args = reducer, args

    def __reduce__(self):
        return self.reducer, self.args


ALLOW_LIST_SCRIPT = r'''
import torch
def name(entry):
    if isinstance(entry, tuple):  # (function, the name it is allowed under)
        return f'{entry[1]} -> {entry[0].__module__}.{entry[0].__qualname__}'
    return f'{entry.__module__}.{entry.__qualname__}'
before = list(torch.serialization.get_safe_globals())
import cdetr_mmdet
from cdetr_mmdet.checkpoint.safety import register_safe_globals
added = list(torch.serialization.get_safe_globals())
register_safe_globals()  # a second call adds nothing
assert list(torch.serialization.get_safe_globals()) == added
# torch registers globals of its own (torch._dynamo ...) as mmdet imports it: not ours.
ours = sorted(set(map(name, added)) - set(map(name, before)))
print('\n'.join(n for n in ours if not n.startswith('torch.')))
'''
DTYPE_NAMES = sorted({type(np.dtype(code)).__name__ for code in
                      '?' + np.typecodes['AllInteger'] + np.typecodes['AllFloat']})
MULTIARRAY = 'numpy._core.multiarray' if hasattr(np, '_core') else 'numpy.core.multiarray'


def test_allow_list_is_exactly_the_data_only_globals():
    """`import cdetr_mmdet` adds these globals and nothing else (no real `getattr`, no object,
    string, void or datetime dtype); a second `register_safe_globals()` adds nothing."""
    out = subprocess.run([sys.executable, '-c', ALLOW_LIST_SCRIPT], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout.split('\n')
    expected = sorted(
        ['mmengine.logging.history_buffer.HistoryBuffer',
         'builtins.getattr -> cdetr_mmdet.checkpoint.safety._history_buffer_getattr',
         'numpy.ndarray', 'numpy.dtype']
        + [f'numpy.dtypes.{n}' for n in DTYPE_NAMES]
        + [f'numpy.{core}.multiarray.{fn} -> {MULTIARRAY}.{fn}'
           for core in ('_core', 'core') for fn in ('_reconstruct', 'scalar')])
    assert [line for line in out if line] == expected
    assert {'BoolDType', 'Float64DType', 'Int64DType', 'Complex128DType'} <= set(DTYPE_NAMES)
    assert not {'ObjectDType', 'StrDType', 'VoidDType', 'DateTime64DType'} & set(DTYPE_NAMES)


def test_import_registers_allow_list():
    # Fresh interpreter: `import cdetr_mmdet` alone must register the list.
    code = ('import torch, cdetr_mmdet\n'
            'from mmengine.logging.history_buffer import HistoryBuffer\n'
            'assert HistoryBuffer in torch.serialization.get_safe_globals()')
    subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, check=True)


def test_mmengine_checkpoint_loads_with_default_torch_load(tmp_path):
    register_safe_globals()
    checkpoint = mmengine_shaped_checkpoint()
    path = tmp_path / 'ckpt.pth'
    torch.save(checkpoint, path)

    loaded = torch.load(path)  # torch's default: weights_only=True

    assert loaded['meta'] == checkpoint['meta']
    torch.testing.assert_close(loaded['state_dict'], checkpoint['state_dict'])
    torch.testing.assert_close(loaded['optimizer'], checkpoint['optimizer'])
    hub = MessageHub(f'checkpoint_safety_loaded_{id(loaded)}')
    hub.load_state_dict(loaded['message_hub'])
    loss = hub.get_scalar('train/loss')
    assert isinstance(loss, HistoryBuffer)
    assert loss.mean() == pytest.approx(0.375)
    assert loss.current() == 0.25
    eta = hub.get_info('eta')
    assert type(eta) is np.float64 and eta == 12.5
    np.testing.assert_array_equal(hub.get_info('history'), np.arange(4))
    assert hub.get_info('dataset_meta') == DATASET_META


def test_numpy1_pickled_names_load(tmp_path):
    # numpy 1.x pickles `numpy.core.multiarray.*`; numpy 2 `numpy._core...`.
    register_safe_globals()
    buffer = io.BytesIO()
    torch.save(dict(array=np.arange(3.0), scalar=np.float64(2.0)), buffer)
    path = tmp_path / 'numpy1.pth'
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith('data.pkl'):
                data = data.replace(b'numpy._core.multiarray',
                                    b'numpy.core.multiarray')
            dst.writestr(name, data)
    with zipfile.ZipFile(path) as archive:
        pickled = archive.read(next(
            name for name in archive.namelist() if name.endswith('data.pkl')))
    assert b'numpy.core.multiarray\n_reconstruct' in pickled
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []

    loaded = torch.load(path)

    np.testing.assert_array_equal(loaded['array'], np.arange(3.0))
    assert type(loaded['scalar']) is np.float64 and loaded['scalar'] == 2.0


def test_load_checkpoint_and_safe_torch_load(tmp_path):
    register_safe_globals()
    checkpoint = mmengine_shaped_checkpoint()
    path = tmp_path / 'ckpt.pth'
    torch.save(checkpoint, path)

    model = ToyModel()
    loaded = load_checkpoint(model, str(path), map_location='cpu')

    torch.testing.assert_close(model.state_dict(), checkpoint['state_dict'])
    assert loaded['meta']['dataset_meta'] == DATASET_META
    assert safe_torch_load(path)['meta'] == checkpoint['meta']


@pytest.mark.parametrize('reducer', [os.system, builtins.exec, Path.touch])
def test_code_executing_checkpoint_is_refused(tmp_path, reducer):
    marker = tmp_path / 'marker'
    args = {
        os.system: (f'touch {marker}', ),
        builtins.exec: (f'open({str(marker)!r}, "w").close()', ),
        Path.touch: (marker, ),
    }[reducer]
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={}, payload=RunsCodeOnLoad(reducer, args)),
               path)

    with pytest.raises(UnsafeCheckpointError) as error:
        safe_torch_load(path)
    message = str(error.value)
    assert str(path) in message
    assert 'arbitrary code execution' in message
    assert 'weights_only' not in message  # no advice to switch safety off
    refused_name = {
        os.system: 'system',  # posix.system / nt.system
        builtins.exec: 'builtins.exec',
        Path.touch: 'pathlib.Path',
    }[reducer]
    assert refused_name in message

    with pytest.raises(pickle.UnpicklingError):  # mmengine's own path
        load_checkpoint(ToyModel(), str(path))
    assert not marker.exists()


def test_history_buffer_getattr_is_not_a_general_getattr(tmp_path):
    # HistoryBuffer needs `getattr(HistoryBuffer, 'min')`; nothing more.
    path = tmp_path / 'getattr.pth'
    torch.save(RunsCodeOnLoad(getattr, (HistoryBuffer, '__init__')), path)

    with pytest.raises(UnsafeCheckpointError, match=r'getattr\(.*__init__'):
        safe_torch_load(path)


def test_arbitrary_class_instance_is_refused(tmp_path):
    path = tmp_path / 'instance.pth'
    torch.save(dict(config=ToyDataset()), path)

    with pytest.raises(UnsafeCheckpointError, match=r'ToyDataset'):
        safe_torch_load(path)


@pytest.fixture
def restore_mmengine_globals():
    """Drop the scope, hub, logger and visualizer instances a Runner adds.

    Each is the "current instance" for later code: a leftover 'mmengine'
    default scope would make other tests build from the wrong registry.
    """
    managers = (DefaultScope, MessageHub, MMLogger, Visualizer)
    before = {cls: set(cls._instance_dict) for cls in managers}
    yield
    for cls in managers:
        for name in set(cls._instance_dict) - before[cls]:
            del cls._instance_dict[name]


def build_runner(work_dir, name, max_iters, **kwargs):
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=name,
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=2,
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=2),
            dict(type='MultiStepLR', milestones=[3], by_epoch=False)
        ],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2,
                            by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        default_scope='mmengine',
        **kwargs)


@pytest.mark.usefixtures('restore_mmengine_globals')
def test_runner_checkpoint_load_and_resume(tmp_path):
    register_safe_globals()
    build_runner(tmp_path, 'safety_train', max_iters=2).train()
    checkpoint = tmp_path / 'iter_2.pth'
    assert checkpoint.is_file()

    model = ToyModel()
    loaded = load_checkpoint(model, str(checkpoint), map_location='cpu')
    assert loaded['meta']['iter'] == 2
    assert loaded['meta']['dataset_meta'] == DATASET_META

    resumed = build_runner(
        tmp_path, 'safety_resume', max_iters=4, resume=True,
        load_from=str(checkpoint))
    resumed.train()
    assert resumed.iter == 4
    # The resumed message hub kept the first run's 2 losses.
    assert len(resumed.message_hub.get_scalar('train/loss').data[0]) == 4
