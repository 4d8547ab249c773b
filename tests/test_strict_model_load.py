"""The detector itself refuses a checkpoint that does not fit it (issue 23).

mmdet's ``init_detector`` and ``DetInferencer``, mmengine's
``load_checkpoint`` and ``Runner.load_checkpoint`` and torch's
``load_state_dict`` all load through ``CdetrConditionalDETR._load_from_state_dict``;
each stops with the same ``CheckpointMismatchError`` (counts, first offenders,
the file), nothing copied, while fitting checkpoints, headless ones made by
``tools/drop_class_head.py`` and ``CdetrStrictLoadHook(strict=False)`` load
as documented. Random-weight models of the tiny config, no training.
"""
import logging
import re
import subprocess
import sys

import pytest
import torch
from mmdet.apis import DetInferencer
from mmdet.apis import init_detector as mmdet_init_detector
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.runner import Runner, load_checkpoint
from torch import nn

from cdetr_mmdet.checkpoint import CheckpointMismatchError, state_dict_check
from conftest import ROOT

TINY_CFG = ROOT / 'tests' / 'data' / 'tiny_cdetr_shapes.py'
CLASSES = ('ellipse', 'rectangle', 'triangle', 'cross')


def tiny_config(embed_dims: int = 32) -> Config:
    """The tiny config at another width (the issue's d=128 vs d=256)."""
    cfg = Config.fromfile(str(TINY_CFG))
    model = cfg.model
    model.neck.out_channels = embed_dims
    model.positional_encoding.num_feats = embed_dims // 2
    for part in ('encoder', 'decoder'):
        model[part].layer_cfg.embed_dims = embed_dims
    model.bbox_head.embed_dims = embed_dims
    return cfg


def save_model(cfg: Config, path, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    state = model.state_dict()
    torch.save({'state_dict': state,
                'meta': {'dataset_meta': {'classes': CLASSES}}}, path)
    return state


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """A d=32 checkpoint, a d=64 config, and a d=32 config file."""
    tmp = tmp_path_factory.mktemp('ckpt')
    narrow = tmp / 'd32.pth'
    state = save_model(tiny_config(32), narrow)
    cfg_path = tmp / 'tiny_d64.py'
    tiny_config(64).dump(str(cfg_path))
    same_path = tmp / 'tiny_d32.py'
    tiny_config(32).dump(str(same_path))
    return dict(narrow=narrow, state=state, cfg64=cfg_path, cfg32=same_path,
                tmp=tmp)


def runner_for(cfg_path, work_dir, with_hook: bool = False,
               strict: bool = True) -> Runner:
    """A bare runner of the config; our strict hook only if asked."""
    cfg = Config.fromfile(str(cfg_path))
    hooks = dict(cfg.default_hooks)
    hooks.pop('strict_load')
    if with_hook:
        hooks['strict_load'] = dict(type='CdetrStrictLoadHook', strict=strict)
    return Runner(model=cfg.model, work_dir=str(work_dir),
                  default_hooks=hooks, default_scope='mmdet',
                  env_cfg=dict(dist_cfg=dict(backend='gloo')))


def assert_width_mismatch(message: str, source: str) -> None:
    """Counts and the first offenders of the d=32 -> d=64 load."""
    assert f'Checkpoint {source} does not fit the model (' in message
    match = re.search(r'\((\d+) of (\d+) model tensors named in it\)',
                      message)
    assert match and int(match[1]) == int(match[2]), message  # all named
    assert re.search(r': \d+ shape mismatches \(', message), message
    assert 'missing keys' not in message and 'unexpected' not in message
    # The first mismatch in state-dict order: the neck's 1x1 conv.
    assert ('neck.convs.0.conv.weight: checkpoint (32, 128, 1, 1) vs model '
            '(64, 128, 1, 1)') in message
    assert re.search(r'\.\.\. \(\d+ more\)', message)
    assert "load_from_skip = ['bbox_head.fc_cls']" in message


LOADERS = {
    'mmdet.init_detector':
        lambda f: mmdet_init_detector(str(f['cfg64']), str(f['narrow']),
                                      device='cpu'),
    'mmdet.DetInferencer':
        lambda f: DetInferencer(str(f['cfg64']), str(f['narrow']),
                                device='cpu'),
    'mmengine.load_checkpoint':
        lambda f: load_checkpoint(MODELS.build(tiny_config(64).model),
                                  str(f['narrow'])),
    'Runner.load_checkpoint':
        lambda f: runner_for(f['cfg64'], f['tmp'] / 'r0').load_checkpoint(
            str(f['narrow'])),
    'Runner.load_checkpoint+hook':
        lambda f: runner_for(f['cfg64'], f['tmp'] / 'r1',
                             with_hook=True).load_checkpoint(str(f['narrow'])),
}


@pytest.mark.parametrize('loader', sorted(LOADERS))
def test_every_loader_refuses_another_width(files, loader):
    with pytest.raises(CheckpointMismatchError) as error:
        LOADERS[loader](files)
    assert_width_mismatch(str(error.value), str(files['narrow']))


def test_the_message_is_the_same_on_every_loader(files):
    messages = set()
    for loader in LOADERS.values():
        with pytest.raises(CheckpointMismatchError) as error:
            loader(files)
        messages.add(str(error.value))
    assert len(messages) == 1, messages


def test_torch_load_state_dict_refuses_even_non_strict(files):
    model = MODELS.build(tiny_config(64).model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as error:
        model.load_state_dict(files['state'], strict=False)
    # No file name here: the message says so.
    assert_width_mismatch(
        str(error.value),
        '(a state dict without file name, loaded into CdetrConditionalDETR)')
    torch.testing.assert_close(model.state_dict(), before)  # nothing copied


@pytest.mark.parametrize('change', ['missing', 'unexpected'])
def test_a_partial_or_foreign_checkpoint_is_refused(files, change):
    state = dict(files['state'])
    if change == 'missing':  # e.g. a backbone-only or truncated checkpoint
        for key in [k for k in state if k.startswith('decoder.')]:
            del state[key]
    else:  # e.g. an EMA copy or another model's extra branch
        state['bbox_head.extra.weight'] = torch.zeros(2)
    path = files['tmp'] / f'{change}.pth'
    torch.save({'state_dict': state}, path)
    with pytest.raises(CheckpointMismatchError) as error:
        mmdet_init_detector(str(files['cfg32']), str(path), device='cpu')
    message = str(error.value)
    if change == 'missing':
        n = sum(k.startswith('decoder.') for k in files['state'])
        assert f': {n} missing keys (decoder.' in message
    else:
        assert ': 1 unexpected keys (bbox_head.extra.weight)' in message


def test_a_wrapped_detector_is_checked_under_its_prefix(files):
    """A parent module (prefix 'det.') still gets the check."""
    parent = nn.ModuleDict({'det': MODELS.build(tiny_config(64).model)})
    with pytest.raises(CheckpointMismatchError):
        parent.load_state_dict(
            {f'det.{k}': v for k, v in files['state'].items()},
            strict=False)
    fitting = MODELS.build(tiny_config(32).model).state_dict()
    parent = nn.ModuleDict({'det': MODELS.build(tiny_config(32).model)})
    parent.load_state_dict({f'det.{k}': v for k, v in fitting.items()})
    torch.testing.assert_close(parent['det'].state_dict(), fitting)


def test_a_fitting_checkpoint_loads_on_every_loader(files):
    state = files['state']
    model = mmdet_init_detector(str(files['cfg32']), str(files['narrow']),
                                device='cpu')
    torch.testing.assert_close(model.state_dict(), state)
    assert model.dataset_meta['classes'] == CLASSES
    inferencer = DetInferencer(str(files['cfg32']), str(files['narrow']),
                               device='cpu')
    torch.testing.assert_close(inferencer.model.state_dict(), state)
    model = MODELS.build(tiny_config(32).model)
    load_checkpoint(model, str(files['narrow']), strict=True)
    torch.testing.assert_close(model.state_dict(), state)
    for hook in (False, True):
        runner = runner_for(files['cfg32'], files['tmp'] / f'ok{hook}',
                            with_hook=hook)
        runner.load_checkpoint(str(files['narrow']))
        torch.testing.assert_close(runner.model.state_dict(), state)
    model = MODELS.build(tiny_config(32).model)
    model.load_state_dict(state)  # torch's default strict load
    torch.testing.assert_close(model.state_dict(), state)


def test_headless_checkpoint_keeps_the_class_head_fresh_with_a_warning(
        files, monkeypatch):
    """tools/drop_class_head.py declares the head it removed, so mmdet's
    init_detector leaves it at its initialisation (and says so) instead of
    refusing; every other tensor is loaded."""
    headless = files['tmp'] / 'headless.pth'
    out = subprocess.run([sys.executable, 'tools/drop_class_head.py',
                          str(files['narrow']), str(headless)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    logged = []
    monkeypatch.setattr(state_dict_check, 'print_log',
                        lambda msg, **kw: logged.append((msg, kw['level'])))
    model = mmdet_init_detector(str(files['cfg32']), str(headless),
                                device='cpu')
    assert logged == [(f"{headless} leaves out ['bbox_head.fc_cls'] on "
            'purpose (tools/drop_class_head.py): 2 model tensors keep their '
            'initialisation (bbox_head.fc_cls.weight, bbox_head.fc_cls.bias)',
        logging.WARNING)]
    state = model.state_dict()
    for key, value in files['state'].items():
        if key.startswith('bbox_head.fc_cls.'):
            assert not torch.equal(state[key], value)
        else:
            torch.testing.assert_close(state[key], value)


def test_headless_checkpoint_still_needs_load_from_skip_on_the_runner(files):
    headless = files['tmp'] / 'headless2.pth'
    subprocess.run([sys.executable, 'tools/drop_class_head.py',
                    str(files['narrow']), str(headless)], cwd=ROOT,
                   check=True, capture_output=True)
    runner = runner_for(files['cfg32'], files['tmp'] / 'hl', with_hook=True)
    with pytest.raises(CheckpointMismatchError, match=r'2 missing keys '
                       r'\(bbox_head\.fc_cls\.weight, bbox_head\.fc_cls\.bias'):
        runner.load_checkpoint(str(headless))


def test_non_strict_hook_restores_mmengine_log_only_loading(files):
    """``CdetrStrictLoadHook(strict=False)`` (docs/reliability.md): the
    detector's check stands aside too; what fits is loaded."""
    runner = runner_for(files['cfg64'], files['tmp'] / 'lax', with_hook=True,
                        strict=False)
    runner.load_checkpoint(str(files['narrow']))  # no error
    state = runner.model.state_dict()
    # Same-shape tensors (e.g. the backbone's) are loaded, the rest not.
    key = 'backbone.conv1.weight'
    torch.testing.assert_close(state[key], files['state'][key])
    assert state['neck.convs.0.conv.weight'].shape[0] == 64
