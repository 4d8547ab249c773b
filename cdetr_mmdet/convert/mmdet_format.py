"""Key mapping from mmdet 3.x's built-in ``ConditionalDETR`` to ours."""
from typing import List

from .key_rules import Rule

_LAYER = r'(encoder|decoder)\.layers\.(\d+)\.'

# (mmdet key start, ours), most specific first. The last rule keeps every
# other key as it is: those names are already ours (backbone, neck, query
# embedding, decoder attention projections, query_scale, ref_point_head,
# fc_cls); a key our model lacks is then reported by the strict check.
MMDET_TO_OURS: List[Rule] = [
    (r'encoder\.layers\.(\d+)\.self_attn\.attn\.',
     r'encoder.layers.\1.self_attn.'),
    (_LAYER + r'ffn\.layers\.0\.0\.', r'\1.layers.\2.linear1.'),
    (_LAYER + r'ffn\.layers\.1\.', r'\1.layers.\2.linear2.'),
    (_LAYER + r'norms\.0\.', r'\1.layers.\2.norm1.'),
    (_LAYER + r'norms\.1\.', r'\1.layers.\2.norm2.'),
    (r'decoder\.layers\.(\d+)\.norms\.2\.', r'decoder.layers.\1.norm3.'),
    (r'decoder\.post_norm\.', 'decoder.norm.'),
    (r'bbox_head\.reg_ffn\.layers\.0\.0\.', 'bbox_head.fc_reg.layers.0.'),
    (r'bbox_head\.reg_ffn\.layers\.1\.', 'bbox_head.fc_reg.layers.1.'),
    (r'bbox_head\.fc_reg\.(weight|bias)$', r'bbox_head.fc_reg.layers.2.\1'),
    (r'', ''),
]
