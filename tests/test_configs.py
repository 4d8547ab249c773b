"""Every config loads, stays within two _base_ levels, builds, and holds the
values its role requires (classes, schedule, runtime)."""
import ast
from pathlib import Path
from typing import List

import pytest
from mmdet.registry import MODELS
from mmengine.config import Config

from conftest import ROOT

CONFIGS = sorted(p for p in (ROOT / 'configs').rglob('*.py')
                 if '_base_' not in p.parts)
PAPER_SCHEDULES = {50: 40, 75: 60, 108: 80}  # epochs: lr drop (paper 4.1)
BACKBONES = {'r50': (50, 'ResNet'), 'r50_dc5': (50, 'CdetrDC5ResNet'),
             'r101': (101, 'ResNet'), 'r101_dc5': (101, 'CdetrDC5ResNet')}


def local_bases(path: Path) -> List[Path]:
    """The _base_ files named by ``path`` (mmdet:: bases left out)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', None) == '_base_' for t in node.targets):
            value = ast.literal_eval(node.value)
            bases = [value] if isinstance(value, str) else list(value)
            return [(path.parent / b).resolve() for b in bases
                    if '::' not in b]
    return []


def base_depth(path: Path) -> int:
    """Longest chain of local _base_ files."""
    return max([0] + [1 + base_depth(b) for b in local_bases(path)])


def chain(path: Path) -> List[Path]:
    """``path`` and every file it inherits from."""
    return [path] + [p for b in local_bases(path) for p in chain(b)]


def assigns(path: Path, name: str) -> bool:
    return any(isinstance(n, ast.Assign) and any(
        getattr(t, 'id', None) == name for t in n.targets)
        for n in ast.parse(path.read_text()).body)


def expected_num_classes(path: Path, cfg: Config) -> int:
    if path.parent.name in ('demo', 'convergence'):
        return 4  # the synthetic shapes
    if path.parent.name == 'examples':
        return len(cfg.classes)
    return 80  # COCO


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_builds(path):
    assert base_depth(path) <= 2
    files = chain(path)
    runtime = ROOT / 'configs' / '_base_' / 'default_runtime.py'
    assert runtime in files, f'{path} does not inherit {runtime}'
    assert [f.name for f in files if assigns(f, 'custom_imports')] == [
        'default_runtime.py']
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == ['cdetr_mmdet']
    # The runtime's hooks reach every config.
    assert dict(type='NumClassCheckHook') in cfg.custom_hooks
    assert cfg.default_hooks.checkpoint.backend_args == dict(
        backend='cdetr_atomic_local')
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert model.bbox_head.num_classes == expected_num_classes(path, cfg)
    dataset_classes = cfg.train_dataloader.dataset.get('metainfo', {}).get(
        'classes')
    if dataset_classes is not None:
        assert len(dataset_classes) == model.bbox_head.num_classes


@pytest.mark.parametrize('backbone', BACKBONES)
@pytest.mark.parametrize('epochs', PAPER_SCHEDULES)
def test_coco_configs_follow_the_paper(backbone, epochs):
    """Each of the 12 paper configs exists (``Config.fromfile`` raises on a missing file) and
    holds the paper's backbone, schedule and optimiser."""
    cfg = Config.fromfile(str(ROOT / 'configs' /
                              f'conditional_detr_{backbone}_{epochs}e.py'))
    depth, backbone_type = BACKBONES[backbone]
    assert (cfg.model.backbone.depth,
            cfg.model.backbone.type) == (depth, backbone_type)
    assert cfg.model.backbone.init_cfg.checkpoint == (
        f'torchvision://resnet{depth}')
    assert cfg.train_cfg.max_epochs == epochs
    assert len(cfg.param_scheduler) == 1
    assert cfg.param_scheduler[0].end == epochs
    assert cfg.param_scheduler[0].milestones == [PAPER_SCHEDULES[epochs]]
    assert cfg.optim_wrapper.optimizer.lr == 1e-4
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == .1
    assert cfg.optim_wrapper.clip_grad.max_norm == 0.1
    dc5 = backbone.endswith('dc5')  # 8 GPUs x 1 image, else 8 x 2
    assert cfg.train_dataloader.batch_size == (1 if dc5 else 2)
    assert cfg.auto_scale_lr.base_batch_size == (8 if dc5 else 16)
    assert cfg.data_root == 'data/coco/'


# Group DETR (configs/group_detr/): backbone, epochs, lr drop (the paper's and
# the official GroupDETR branch's 12-epoch script: drop after epoch 11).
GROUP_DETR = {'r50_group11_12e': ('r50', 12, 11),
              'r50_group11_50e': ('r50', 50, 40),
              'r50_dc5_group11_12e': ('r50_dc5', 12, 11),
              'r50_dc5_group11_50e': ('r50_dc5', 50, 40)}


@pytest.mark.parametrize('name', GROUP_DETR)
def test_group_detr_configs(name):
    backbone, epochs, drop = GROUP_DETR[name]
    cfg = Config.fromfile(str(ROOT / 'configs' / 'group_detr' /
                              f'conditional_detr_{name}.py'))
    depth, backbone_type = BACKBONES[backbone]
    assert (cfg.model.backbone.depth,
            cfg.model.backbone.type) == (depth, backbone_type)
    assert cfg.model.group_detr == 11 and cfg.model.num_queries == 300
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.param_scheduler[0].end == epochs
    assert cfg.param_scheduler[0].milestones == [drop]
    dc5 = backbone.endswith('dc5')  # 8 GPUs x 1 image, else 8 x 2
    assert cfg.train_dataloader.batch_size == (1 if dc5 else 2)
    assert cfg.auto_scale_lr.base_batch_size == (8 if dc5 else 16)
    # Everything but the groups (and the schedule) is the K = 1 config's.
    plain = Config.fromfile(str(ROOT / 'configs' /
                                f'conditional_detr_{backbone}_50e.py'))
    plain.model.group_detr = 11
    assert cfg.model.to_dict() == plain.model.to_dict()
    assert cfg.optim_wrapper.to_dict() == plain.optim_wrapper.to_dict()


# mmdet's own DETR / ConditionalDETR twins (benchmarks, demo) have no groups.
MMDET_TWINS = ('detr_r18_shapes.py', 'detr_r18_shapes_d256.py',
               'mmdet_conditional_detr_r18_shapes_d256.py')


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_group_detr_option_reaches_every_config(path):
    """``--cfg-options model.group_detr=K`` means our detector's argument."""
    cfg = Config.fromfile(str(path))
    if path.name in MMDET_TWINS:
        assert cfg.model.type in ('DETR', 'ConditionalDETR')
        return
    assert cfg.model.type == 'CdetrConditionalDETR'
    cfg.merge_from_dict({'model.group_detr': 3})
    assert cfg.model.group_detr == 3


def test_group_detr_option_builds_k_groups():
    cfg = Config.fromfile(str(ROOT / 'configs' / 'demo' /
                              'conditional_detr_r18_shapes.py'))
    cfg.merge_from_dict({'model.group_detr': 3})
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert model.query_embedding.weight.shape[0] == 3 * cfg.model.num_queries
    assert model.decoder.num_groups == model.bbox_head.num_groups == 3
