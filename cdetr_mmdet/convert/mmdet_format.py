"""Key mapping from mmdet 3.x's built-in ``ConditionalDETR`` to ours."""
import re
from typing import Dict, List, Tuple

from torch import Tensor

# (pattern, replacement) applied in order to each mmdet key; keys no rule
# touches are already ours (backbone, neck, attention projections, ...).
MMDET_TO_OURS: List[Tuple[str, str]] = [
    (r'^encoder\.layers\.(\d+)\.self_attn\.attn\.', r'encoder.layers.\1.self_attn.'),
    (r'^(encoder|decoder)\.layers\.(\d+)\.ffn\.layers\.0\.0\.', r'\1.layers.\2.linear1.'),
    (r'^(encoder|decoder)\.layers\.(\d+)\.ffn\.layers\.1\.', r'\1.layers.\2.linear2.'),
    (r'^(encoder|decoder)\.layers\.(\d+)\.norms\.0\.', r'\1.layers.\2.norm1.'),
    (r'^(encoder|decoder)\.layers\.(\d+)\.norms\.1\.', r'\1.layers.\2.norm2.'),
    (r'^decoder\.layers\.(\d+)\.norms\.2\.', r'decoder.layers.\1.norm3.'),
    (r'^decoder\.post_norm\.', 'decoder.norm.'),
    (r'^bbox_head\.reg_ffn\.layers\.0\.0\.', 'bbox_head.fc_reg.layers.0.'),
    (r'^bbox_head\.reg_ffn\.layers\.1\.', 'bbox_head.fc_reg.layers.1.'),
    (r'^bbox_head\.fc_reg\.(weight|bias)$', r'bbox_head.fc_reg.layers.2.\1'),
]


def mmdet_to_ours_key(key: str) -> str:
    """Rename one mmdet ``ConditionalDETR`` state-dict key to ours."""
    for pattern, replacement in MMDET_TO_OURS:
        new_key, count = re.subn(pattern, replacement, key)
        if count:
            return new_key
    return key


def convert_mmdet_state_dict(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Rename every key of an mmdet ``ConditionalDETR`` state dict.

    Args:
        state_dict (dict[str, Tensor]): mmdet 3.x ``ConditionalDETR`` weights.

    Returns:
        dict[str, Tensor]: The same tensors under our keys.
    """
    return {mmdet_to_ours_key(k): v for k, v in state_dict.items()}
