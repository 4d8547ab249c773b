"""Conditional DETR components registered in mmdet's registries."""
from .dc5_resnet import CdetrDC5ResNet
from .decoder import CdetrTransformerDecoder
from .detector import CdetrConditionalDETR
from .encoder import CdetrTransformerEncoder
from .frozen_bn import CdetrFrozenBatchNorm2d
from .head import CdetrHead
from .matcher import CdetrHungarianMatcher, MatchIndices

__all__ = [
    'CdetrConditionalDETR', 'CdetrTransformerEncoder',
    'CdetrTransformerDecoder', 'CdetrHead', 'CdetrHungarianMatcher',
    'CdetrDC5ResNet', 'CdetrFrozenBatchNorm2d', 'MatchIndices'
]
