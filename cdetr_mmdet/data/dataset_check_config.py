"""Find the splits a config uses and check them (``tools/check_dataset.py``, the check hook)."""
import copy
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.datasets import CocoDataset
from mmdet.evaluation import CocoMetric
from mmdet.registry import DATASETS, METRICS, MODELS
from mmengine.config import Config, ConfigDict

from .coco_api import DatasetError
from .coco_dataset import CdetrCocoDataset
from .dataset_check import SplitReport, SplitSpec, check_split

_RESIZES = ('Resize', 'RandomChoiceResize', 'FixShapeResize')
_WRAPPERS = ('RepeatDataset', 'ClassBalancedDataset', 'MultiImageMixDataset')


def feature_stride(model_cfg: ConfigDict, probe: int = 256) -> Tuple[Optional[int], str]:
    """The stride of the feature map the transformer reads, measured on the config's backbone.

    Builds the backbone (and neck) without loading weights and runs a ``probe x probe`` zero image
    through it: 32 for a C5 ResNet, 16 for DC5. Returns ``(None, why)`` if that fails.
    """
    try:
        backbone_cfg = copy.deepcopy(model_cfg['backbone'])
        backbone_cfg.pop('init_cfg', None)
        modules = [MODELS.build(backbone_cfg)]
        if model_cfg.get('neck') is not None:
            modules.append(MODELS.build(copy.deepcopy(model_cfg['neck'])))
        x = torch.zeros(1, 3, probe, probe)
        with torch.no_grad():
            for module in modules:
                module.eval()  # mmdet's ResNet.train() returns None: no chaining
                x = module(x)
        feat = x[-1] if isinstance(x, (tuple, list)) else x  # (1, C, H', W')
    except Exception as e:  # any backbone; the check goes on without the size comparison
        return None, f'could not be measured on the config\'s backbone: {type(e).__name__}: {e}'
    stride = round(probe / feat.shape[-1])
    return stride, f"measured on the config's {model_cfg['backbone']['type']}"


def input_scale(pipeline: Sequence[dict]) -> Optional[Tuple[Tuple[int, int], bool]]:
    """``(scale, keep_ratio)`` of the first resize in a pipeline (nested RandomChoice included);
    for a random choice of scales, the median one."""
    for t in pipeline or []:
        if isinstance(t, (list, tuple)):
            found = input_scale(t)
        elif t.get('type') in _RESIZES:
            if t.get('scale') is not None:
                return tuple(t['scale']), bool(t.get('keep_ratio', False))
            scales = sorted(t.get('scales') or [], key=min)
            found = ((tuple(scales[len(scales) // 2]), bool(t.get('keep_ratio', False)))
                     if scales else None)
        else:
            found = input_scale(t.get('transforms', []))
        if found:
            return found
    return None


def _has_clamp(pipeline: Sequence[dict]) -> bool:
    return any(isinstance(t, dict) and t.get('type') == 'CdetrClampBoxes' for t in pipeline or [])


def _coco_specs(name: str, dataset: dict, order_safe_metric: bool) -> List[SplitSpec]:
    """Split specs of one dataset config (wrappers unrolled); non-COCO datasets are skipped."""
    dtype = dataset.get('type')
    if dtype == 'ConcatDataset':
        return [s for i, d in enumerate(dataset['datasets'])
                for s in _coco_specs(f'{name}[{i}]', d, order_safe_metric)]
    if dtype in _WRAPPERS:
        return _coco_specs(name, dataset['dataset'], order_safe_metric)
    cls = DATASETS.get(dtype) if isinstance(dtype, str) else dtype
    if cls is None or not issubclass(cls, CocoDataset):
        return []
    if (dataset.get('backend_args') or {}).get('backend', 'local') != 'local':
        return []  # the check reads local files only
    data_root = dataset.get('data_root') or ''
    ann_file = dataset.get('ann_file', '')
    img_prefix = (dataset.get('data_prefix') or {}).get('img', '')
    classes = (dataset.get('metainfo') or {}).get('classes') or cls.METAINFO['classes']
    filter_cfg = dataset.get('filter_cfg') or {}
    return [SplitSpec(
        name=name,
        ann_file=ann_file if osp.isabs(ann_file) else osp.join(data_root, ann_file),
        img_dir=img_prefix if osp.isabs(img_prefix) else osp.join(data_root, img_prefix),
        classes=tuple(classes),
        test_mode=bool(dataset.get('test_mode', False)),
        filter_empty_gt=bool(filter_cfg.get('filter_empty_gt', False)),
        input_scale=input_scale(dataset.get('pipeline')),
        clamps_boxes=_has_clamp(dataset.get('pipeline')),
        order_safe=issubclass(cls, CdetrCocoDataset) and order_safe_metric)]


def _metric_is_order_safe(evaluator) -> bool:
    """False if a COCO metric of mmdet (not ours) would map labels in the JSON's order."""
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    for metric in metrics:
        if not isinstance(metric, dict):
            continue
        cls = METRICS.get(metric.get('type')) if isinstance(metric.get('type'), str) else None
        if cls is not None and issubclass(cls, CocoMetric) and metric.get('ann_file') \
                and not cls.__name__.startswith('Cdetr'):
            return False
    return True


def split_specs(cfg: Config, splits: Sequence[str] = ('train', 'val', 'test')) -> List[SplitSpec]:
    """The COCO-format splits of ``cfg`` among ``splits``; loaders sharing a dataset count once."""
    specs: Dict[str, SplitSpec] = {}
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader or not loader.get('dataset'):
            continue
        metric_safe = _metric_is_order_safe(cfg.get(f'{split}_evaluator')) if split != 'train' \
            else True
        for spec in _coco_specs(split, loader['dataset'], metric_safe):
            key = repr(_split_key(spec))
            if key in specs:
                specs[key].name += f'/{split}'
            else:
                specs[key] = spec
    return list(specs.values())


def _split_key(spec: SplitSpec) -> tuple:
    """What makes two loaders' datasets the same split for the check."""
    return (spec.ann_file, spec.img_dir, spec.classes, spec.test_mode, spec.filter_empty_gt,
            spec.input_scale, spec.clamps_boxes, spec.order_safe)


def check_config(cfg: Config, splits: Sequence[str] = ('train', 'val', 'test'),
                 small_box_fraction: float = 0.5,
                 progress: Optional[Callable[[str], None]] = None) -> List[SplitReport]:
    """Check every COCO-format split of ``cfg`` among ``splits``."""
    stride, stride_note = feature_stride(cfg.model) if cfg.get('model') else (None, 'no model')
    return [check_split(spec, stride, stride_note, small_box_fraction, progress)
            for spec in split_specs(cfg, splits)]


def raise_on_errors(reports: Sequence[SplitReport]) -> None:
    """Raise one :class:`DatasetError` listing every error of every split."""
    errors = [f'{r.spec.name}: {e}' for r in reports for e in r.errors]
    if errors:
        raise DatasetError('dataset check failed (python tools/check_dataset.py CONFIG prints the '
                           'full report; dataset_check=dict(enabled=False) turns the check off):'
                           '\n  ' + '\n  '.join(errors))
