"""Shared fixtures: tiny model configs and padded batches of two images."""
import copy
from pathlib import Path
from typing import List, Sequence, Tuple

import pytest
import torch
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.logging import MMLogger

import cdetr_mmdet  # noqa: F401  (registers our modules)

# Random weights for parity tests (zero-initialised layers would hide bugs).
from cdetr_testing import add_random_gts, padded_batch, randomize_  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
MMDET_CDETR_CFG = (Path(__import__('mmdet').__file__).parent / '.mim' /
                   'configs' / 'conditional_detr' /
                   'conditional-detr_r50_8xb2-50e_coco.py')

register_all_modules(init_default_scope=True)
# Parameter-by-parameter init reports would drown the test output.
MMLogger.get_current_instance().setLevel('WARNING')


def shrink_model_cfg(model: Config, embed_dims: int = 64,
                     num_layers: int = 2, num_queries: int = 10,
                     num_classes: int = 3) -> Config:
    """Turn an R50 Conditional DETR model config into a tiny R18 one.

    Works for our config and mmdet's built-in one (whose decoder only
    supports ``embed_dims=256``).
    """
    model = copy.deepcopy(model)
    model.backbone.update(depth=18, init_cfg=None, frozen_stages=-1)
    model.neck.update(in_channels=[512], out_channels=embed_dims)
    model.num_queries = num_queries
    model.positional_encoding.num_feats = embed_dims // 2
    model.bbox_head.update(num_classes=num_classes, embed_dims=embed_dims)
    for part in ('encoder', 'decoder'):
        model[part].num_layers = num_layers
        layer = model[part].layer_cfg
        if 'embed_dims' in layer:  # ours
            layer.update(embed_dims=embed_dims, feedforward_channels=128)
        else:  # mmdet's built-in
            for attn in ('self_attn_cfg', 'cross_attn_cfg'):
                if attn in layer:
                    layer[attn].embed_dims = embed_dims
            layer.ffn_cfg.update(embed_dims=embed_dims,
                                 feedforward_channels=128)
    return model


@pytest.fixture
def tiny_model_cfg() -> Config:
    """Our model config, R18, d=64, 2+2 layers, 10 queries, 3 classes."""
    cfg = Config.fromfile(str(ROOT / 'configs' / 'conditional_detr_r50_50e.py'))
    return shrink_model_cfg(cfg.model)


def make_batch(sizes: Sequence[Tuple[int, int]] = ((64, 96), (48, 80)),
               num_gts: Sequence[int] = (3, 2), num_classes: int = 3,
               seed: int = 0) -> Tuple[torch.Tensor, List[DetDataSample]]:
    """A zero-padded batch of normalised images and their data samples.

    :func:`cdetr_testing.padded_batch` with random ``gt_instances``
    (:func:`cdetr_testing.add_random_gts`).

    Returns:
        tuple: ``inputs`` (bs, 3, H, W) and the data samples.
    """
    inputs, _, samples = padded_batch(sizes, seed=seed)
    add_random_gts(samples, num_gts, num_classes, seed=seed + 1)
    return inputs, samples
