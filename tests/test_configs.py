"""Every config loads, stays within two _base_ levels, and builds."""
import ast
from pathlib import Path

import pytest
from mmdet.registry import MODELS
from mmengine.config import Config

from conftest import ROOT

CONFIGS = sorted(p for p in (ROOT / 'configs').rglob('*.py')
                 if '_base_' not in p.parts)


def base_depth(path: Path) -> int:
    """Longest chain of local _base_ files (mmdet:: bases count as one)."""
    tree = ast.parse(path.read_text())
    bases = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', None) == '_base_' for t in node.targets):
            value = ast.literal_eval(node.value)
            bases = [value] if isinstance(value, str) else list(value)
    depths = [0]
    for base in bases:
        if '::' in base:
            depths.append(1)
        else:
            depths.append(1 + base_depth((path.parent / base).resolve()))
    return max(depths)


def test_the_expected_configs_exist():
    names = {p.name for p in CONFIGS}
    for backbone in ('r50', 'r50_dc5', 'r101', 'r101_dc5'):
        for epochs in ('50e', '108e'):
            assert f'conditional_detr_{backbone}_{epochs}.py' in names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_builds(path):
    assert base_depth(path) <= 2
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == ['cdetr_mmdet']
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert model.bbox_head.num_classes > 0


def test_dc5_and_schedules():
    cfg = Config.fromfile(str(ROOT / 'configs' /
                              'conditional_detr_r101_dc5_108e.py'))
    assert cfg.model.backbone.depth == 101
    assert cfg.model.backbone.type == 'CdetrDC5ResNet'
    assert cfg.train_cfg.max_epochs == 108
    assert cfg.param_scheduler[0].milestones == [80]
    r50 = Config.fromfile(str(ROOT / 'configs' / 'conditional_detr_r50_50e.py'))
    assert r50.train_cfg.max_epochs == 50
    assert r50.param_scheduler[0].milestones == [40]
    assert r50.optim_wrapper.clip_grad.max_norm == 0.1
    assert r50.data_root == 'data/coco/'
