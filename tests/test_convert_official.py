"""Official (Atten4Vis/ConditionalDETR) checkpoints -> ours.

The official R50 state dict is rebuilt from its recorded key list with
shapes (``tests/data/official_conditional_detr_r50_state_dict.tsv``, taken
from the released checkpoint): every key must be used, every model key
filled, and official -> ours -> official must give back the same tensors.
"""
import argparse
import ast
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from mmdet.apis import init_detector
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from cdetr_mmdet.convert import (COCO_CATEGORY_IDS, DEFAULT_CONFIG,
                                 build_target_model, convert_checkpoint,
                                 convert_state_dict)
from cdetr_testing import expand_to_category_rows, ours_to_official, randomize_
from conftest import ROOT

REPO_ROOT = Path(__file__).resolve().parents[1]
TSV = (Path(__file__).parent / 'data' /
       'official_conditional_detr_r50_state_dict.tsv')
# Parameters outside the backbone of the official R50 model (91 classes):
# encoder 7,890,432 + decoder 11,315,714 + input_proj 524,544
# + query_embed 76,800 + class_embed 23,387 + bbox_embed 132,612.
R50_PARAMS_OUTSIDE_BACKBONE = 19_963_489

SMALL = {  # a small model for the CLI test
    'model.num_queries': 10, 'model.backbone.depth': 18,
    'model.neck.in_channels': [512], 'model.encoder.num_layers': 1,
    'model.decoder.num_layers': 2,
}


def official_shapes():
    """{key: shape} of the official R50 checkpoint, in its order."""
    lines = TSV.read_text().splitlines()
    return {key: ast.literal_eval(shape)
            for key, shape in (line.split('\t') for line in lines)}


@pytest.fixture(scope='module')
def official_r50():
    """An official-layout R50 state dict with distinct values per entry."""
    state_dict = {}
    for index, (key, shape) in enumerate(official_shapes().items()):
        numel = torch.Size(shape).numel()
        values = torch.arange(numel, dtype=torch.float32) / numel + index
        state_dict[key] = values.reshape(shape)
    return state_dict


def test_tsv_is_the_official_r50_layout():
    shapes = official_shapes()
    assert len(shapes) == 564
    assert shapes['class_embed.weight'] == (91, 256)
    assert shapes['input_proj.weight'] == (256, 2048, 1, 1)
    assert not any(k.endswith('num_batches_tracked') for k in shapes)


def test_r50_every_key_used_and_params_exact(official_r50, tmp_path):
    src = tmp_path / 'official.pth'
    # As the official main.py saves it, with the argparse arguments.
    torch.save({'model': official_r50, 'epoch': 49,
                'args': argparse.Namespace(lr=1e-4, backbone='resnet50')},
               src)
    dst = tmp_path / 'ours.pth'
    convert_checkpoint(src, dst, 'official', keep_91=True)

    cfg = Config.fromfile(str(DEFAULT_CONFIG))
    cfg.model.bbox_head.num_classes = 91
    model = init_detector(cfg, str(dst), device='cpu')
    assert len(model.dataset_meta['classes']) == 91
    assert model.dataset_meta['classes'][90] == 'toothbrush'
    outside = sum(p.numel() for name, p in model.named_parameters()
                  if not name.startswith('backbone.'))
    assert outside == R50_PARAMS_OUTSIDE_BACKBONE

    loaded = model.state_dict()
    # BatchNorm counters the official frozen BN lacks are filled with 0.
    counters = [k for k in loaded if k.endswith('num_batches_tracked')]
    assert counters and all(int(loaded[k]) == 0 for k in counters)
    # Round trip: official -> ours -> official gives the same tensors.
    back = ours_to_official(loaded)
    assert set(back) == set(official_r50)
    for key, value in official_r50.items():
        assert torch.equal(back[key], value), key


@pytest.mark.parametrize('name', ['r50_dc5', 'r101', 'r101_dc5'])
def test_dc5_and_r101_every_key_used_and_params_exact(name, tmp_path):
    """The other official checkpoints: DC5 keeps R50's keys and shapes (dilation has no
    weights); R101's layer3 has 23 blocks (6-22 shaped as 1-5). Converted with their configs,
    loaded strictly by mmdet's init_detector, and back to the same official tensors."""
    shapes = official_shapes()
    if name.startswith('r101'):
        block = {k[len('backbone.0.body.layer3.1.'):]: v for k, v in shapes.items()
                 if k.startswith('backbone.0.body.layer3.1.')}
        for i in range(6, 23):
            shapes.update({f'backbone.0.body.layer3.{i}.{k}': v for k, v in block.items()})
    official = {key: torch.arange(torch.Size(shape).numel(), dtype=torch.float32).reshape(shape)
                / torch.Size(shape).numel() + index
                for index, (key, shape) in enumerate(shapes.items())}
    src, dst = tmp_path / 'official.pth', tmp_path / 'ours.pth'
    torch.save({'model': official}, src)
    cfg = Config.fromfile(str(ROOT / 'configs' / f'conditional_detr_{name}_50e.py'))
    cfg.model.backbone.init_cfg = None
    cfg.model.bbox_head.num_classes = 91
    convert_checkpoint(src, dst, 'official', keep_91=True, config=cfg)
    model = init_detector(cfg, str(dst), device='cpu')
    loaded = model.state_dict()
    assert sum(k.startswith('backbone.layer3.') and k.endswith('conv1.weight')
               for k in loaded) == (23 if name.startswith('r101') else 6)
    back = ours_to_official(loaded)
    assert set(back) == set(official)
    for key, value in official.items():
        assert torch.equal(back[key], value), key


def test_r50_80_classes_by_category_id(official_r50):
    model = build_target_model()
    ours = convert_state_dict(official_r50, 'official', model)
    model.load_state_dict(ours, strict=True)
    for name in ('weight', 'bias'):
        rows = official_r50[f'class_embed.{name}']
        ours_rows = ours[f'bbox_head.fc_cls.{name}']
        assert ours_rows.shape[0] == 80
        assert torch.equal(ours_rows, rows[list(COCO_CATEGORY_IDS)])
        back = expand_to_category_rows(ours_rows)
        assert torch.equal(back[list(COCO_CATEGORY_IDS)],
                           rows[list(COCO_CATEGORY_IDS)])
    back = ours_to_official(ours)
    for key, value in official_r50.items():
        if not key.startswith('class_embed.'):
            assert torch.equal(back[key], value), key


def load_cli():
    """tools/convert_checkpoint.py as a module (run in-process: fast)."""
    spec = importlib.util.spec_from_file_location(
        'convert_checkpoint_cli',
        REPO_ROOT / 'tools' / 'convert_checkpoint.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_converts_and_mmengine_loads_strict(tmp_path, monkeypatch,
                                                capsys):
    model = randomize_(build_target_model(cfg_options=SMALL))
    official = ours_to_official(model.state_dict())
    for name in ('weight', 'bias'):
        key = f'class_embed.{name}'
        official[key] = expand_to_category_rows(official[key])
    torch.save({'model': official}, tmp_path / 'src.pth')
    options = [f'{key}={value}' for key, value in SMALL.items()]
    monkeypatch.setattr(sys, 'argv', [
        'convert_checkpoint.py', str(tmp_path / 'src.pth'),
        str(tmp_path / 'dst.pth'), '--from', 'official', '--cfg-options',
        *options])
    load_cli().main()
    assert 'every source key used' in capsys.readouterr().out

    fresh = build_target_model(cfg_options=SMALL)
    checkpoint = load_checkpoint(fresh, str(tmp_path / 'dst.pth'),
                                 strict=True)
    assert checkpoint['meta']['converted_from'] == 'official'
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_cli_reports_mismatch_and_exits(tmp_path, monkeypatch):
    torch.save({'model': {'foo.weight': torch.zeros(1)}}, tmp_path / 'x.pth')
    monkeypatch.setattr(sys, 'argv', [
        'convert_checkpoint.py', str(tmp_path / 'x.pth'),
        str(tmp_path / 'y.pth'), '--from', 'official'])
    with pytest.raises(SystemExit) as exit_info:
        load_cli().main()
    message = str(exit_info.value.code)
    assert 'foo.weight: no mapping rule' in message
    assert 'model keys not filled' in message
    assert not (tmp_path / 'y.pth').exists()
