"""The paper's ablation points (section 4.3) as small registered modules.

A decoder config picks them by ``MODELS`` type; the decoder's string
switches (``reference``, ``spatial_query``, ``transform``) are aliases of
these configs. The full model's modules (the defaults) are in
:mod:`cdetr_mmdet.models.decoder`.
"""
from .reference_points import CdetrFixedReference, CdetrLearnedReference
from .spatial_queries import CdetrContentSpatialQuery, CdetrTransformSpatialQuery
from .transforms import (CdetrBlockTransform, CdetrFullTransform,
                         CdetrScalarTransform)

__all__ = [
    'CdetrLearnedReference', 'CdetrFixedReference',
    'CdetrContentSpatialQuery', 'CdetrTransformSpatialQuery',
    'CdetrScalarTransform', 'CdetrBlockTransform', 'CdetrFullTransform'
]
