"""The paper's ablation points (section 4.3) as small registered modules.

A decoder config picks them by ``MODELS`` type; the decoder's string
switches (``reference``, ``spatial_query``, ``transform``) are aliases of
these configs. Defaults are the paper's full model.
"""
from .reference_points import (CdetrFixedReference, CdetrLearnedReference,
                               CdetrPredictedReference)
from .spatial_queries import (CdetrConditionalSpatialQuery,
                              CdetrContentSpatialQuery,
                              CdetrTransformSpatialQuery)
from .transforms import (CdetrBlockTransform, CdetrDiagonalTransform,
                         CdetrFullTransform, CdetrScalarTransform)

__all__ = [
    'CdetrPredictedReference', 'CdetrLearnedReference', 'CdetrFixedReference',
    'CdetrConditionalSpatialQuery', 'CdetrContentSpatialQuery',
    'CdetrTransformSpatialQuery', 'CdetrDiagonalTransform',
    'CdetrScalarTransform', 'CdetrBlockTransform', 'CdetrFullTransform'
]
