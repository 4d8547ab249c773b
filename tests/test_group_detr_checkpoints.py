"""Group DETR checkpoints: strict in their own config, group 0 only on request.

A ``group_detr=K`` checkpoint loads strictly into its own config; a K = 1
config refuses it with the mismatch error (which names the way out), and
``tools/keep_first_group.py`` is the explicit step that keeps the first group;
official GroupDETR-branch checkpoints convert with ``--from official``.
"""
import argparse
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from cdetr_mmdet.apis import init_detector
from cdetr_mmdet.convert import (CheckpointMismatchError, build_target_model,
                                 convert_checkpoint)
from cdetr_mmdet.checkpoint.query_groups import keep_first_group
from cdetr_mmdet.checkpoint import CheckpointMismatchError as LoadMismatchError
from cdetr_testing import expand_to_category_rows, ours_to_official
from conftest import ROOT, make_batch, randomize_, shrink_model_cfg

K = 3


def tiny_config(group_detr=1):
    cfg = Config.fromfile(str(ROOT / 'configs' / 'conditional_detr_r50_50e.py'))
    cfg.model = shrink_model_cfg(cfg.model)
    cfg.model.group_detr = group_detr
    return cfg


@pytest.fixture(scope='module')
def group_checkpoint(tmp_path_factory):
    """A random K-group tiny model saved as ours; (model, path)."""
    model = randomize_(init_detector(tiny_config(K)))
    path = tmp_path_factory.mktemp('group') / 'group.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return model, path


def test_loads_strictly_into_its_own_config(group_checkpoint):
    model, path = group_checkpoint
    loaded = init_detector(tiny_config(K), str(path))
    assert torch.equal(loaded.query_embedding.weight,
                       model.query_embedding.weight)


def test_k1_config_refuses_it_and_names_the_explicit_step(group_checkpoint):
    _, path = group_checkpoint
    with pytest.raises(LoadMismatchError) as error:
        init_detector(tiny_config(1), str(path))
    message = str(error.value)
    assert 'query_embedding.weight: checkpoint (30, 64) vs model (10, 64)' \
        in message
    assert 'tools/keep_first_group.py' in message


def test_keep_first_group_tool_gives_the_eval_mode_model(group_checkpoint,
                                                         tmp_path):
    model, path = group_checkpoint
    dst = tmp_path / 'group0.pth'
    out = subprocess.run([sys.executable, 'tools/keep_first_group.py',
                          str(path), str(dst), '--num-queries', '10'],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'kept query group 0 of 3 (rows 0-9 of 30)' in out.stdout
    single = init_detector(tiny_config(1), str(dst))
    assert torch.load(dst)['meta']['group_detr_first_group_of'] == K
    inputs, samples = make_batch()
    with torch.no_grad():
        ours = model.eval()(inputs, samples, mode='tensor')
        ref = single(inputs, samples, mode='tensor')
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


def test_keep_first_group_refuses_what_it_cannot_do(group_checkpoint):
    model, _ = group_checkpoint
    state = model.state_dict()
    with pytest.raises(ValueError, match='not a multiple of num_queries=7'):
        keep_first_group(state, 7)
    single, _ = keep_first_group(state, 10)
    with pytest.raises(ValueError, match='already one group'):
        keep_first_group(single, 10)


def small_options(group_detr):
    return {'model.num_queries': 10, 'model.backbone.depth': 18,
            'model.neck.in_channels': [512], 'model.encoder.num_layers': 1,
            'model.decoder.num_layers': 2, 'model.group_detr': group_detr}


def test_official_group_detr_checkpoint_converts(tmp_path):
    """The GroupDETR branch's layout: ``query_embed`` of K * N rows."""
    model = randomize_(build_target_model(cfg_options=small_options(K)))
    official = ours_to_official(model.state_dict())
    assert official['query_embed.weight'].shape[0] == K * 10
    for name in ('weight', 'bias'):
        key = f'class_embed.{name}'
        official[key] = expand_to_category_rows(official[key])
    src = tmp_path / 'official_group.pth'
    torch.save({'model': official,
                'args': argparse.Namespace(group_detr=K)}, src)
    with pytest.raises(CheckpointMismatchError) as error:  # K = 1 config
        convert_checkpoint(src, tmp_path / 'no.pth', 'official',
                           cfg_options=small_options(1))
    assert 'Set model.group_detr' in str(error.value)
    assert not (tmp_path / 'no.pth').exists()
    result = convert_checkpoint(src, tmp_path / 'ours.pth', 'official',
                                cfg_options=small_options(K))
    fresh = build_target_model(cfg_options=small_options(K))
    fresh.load_state_dict(result['state_dict'], strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
