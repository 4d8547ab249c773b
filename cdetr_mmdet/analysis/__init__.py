"""Analysis tools that run outside the model's hot path (attention maps)."""
from .cross_attention import CrossAttentionMaps, analyze_cross_attention
from .decompose import LogitSplit, masked_softmax

__all__ = ['CrossAttentionMaps', 'analyze_cross_attention', 'LogitSplit',
           'masked_softmax']
