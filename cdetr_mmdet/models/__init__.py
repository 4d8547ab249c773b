"""Conditional DETR components registered in mmdet's registries."""
from .dc5_resnet import CdetrDC5ResNet
from .decoder import (CdetrConditionalSpatialQuery, CdetrDiagonalTransform,
                      CdetrPredictedReference, CdetrTransformerDecoder)
from .detector import CdetrConditionalDETR
from .frozen_bn import CdetrFrozenBatchNorm2d
from .head import CdetrHead
from .matcher import CdetrHungarianMatcher, MatchIndices
from .transformer import CdetrTransformerEncoder
from . import variants  # noqa: F401,I001  (registers the ablations' modules)

__all__ = [
    'CdetrConditionalDETR', 'CdetrTransformerEncoder',
    'CdetrTransformerDecoder', 'CdetrHead', 'CdetrHungarianMatcher',
    'CdetrDC5ResNet', 'CdetrFrozenBatchNorm2d', 'MatchIndices',
    'CdetrPredictedReference', 'CdetrConditionalSpatialQuery',
    'CdetrDiagonalTransform'
]
