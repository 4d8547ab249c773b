"""Key mapping from Hugging Face Conditional DETR to the official layout.

Hugging Face ``ConditionalDetrForObjectDetection`` weights come in two
layouts:

- the *file* layout of the hub (``model.safetensors`` / ``pytorch_model.bin``
  of ``microsoft/conditional-detr-resnet-50``), which transformers 4.x wrote
  and transformers 5 still writes on ``save_pretrained``: decoder projections
  named as in the official code (``sa_qcontent_proj``, ``ca_kpos_proj``),
  ``out_proj``, ``fc1``, the backbone under ``model.backbone.conv_encoder``;
- the *module* layout of a transformers 5 model's ``state_dict()``
  (``self_attn.q_content_proj``, ``o_proj``, ``mlp.fc1``,
  ``model.backbone.model``): the inverse of transformers' own load-time
  renaming.

:data:`HF_TO_OFFICIAL` renames both layouts to the official keys.

The backbone is either timm's ResNet (``use_timm_backbone=True``, the hub
default; torchvision parameter names) or transformers' ``ResNetBackbone``
(``embedder`` / ``encoder.stages``), both with frozen BatchNorm. The encoder
keeps q, k and v separate, where the official code has one ``in_proj``
(q, k, v stacked in this order, as in ``torch.nn.MultiheadAttention``).
"""
import re
from typing import Callable, Dict, List, Mapping, Tuple

import torch
from torch import Tensor

from .key_rules import Renamed, Rule, rename

# The backbone prefix of both layouts.
_BB = r'model\.backbone\.(?:conv_encoder\.)?model\.'
_STAGE = _BB + r'encoder\.stages\.(\d+)\.layers\.(\d+)\.'
_BODY = 'backbone.0.body.'
_ENC = r'model\.encoder\.layers\.(\d+)\.'
_OFF_ENC = r'transformer.encoder.layers.\1.'
_DEC = r'model\.decoder\.layers\.(\d+)\.'
_OFF_DEC = r'transformer.decoder.layers.\1.'
# Temporary name of an encoder q/k/v projection, stacked by _stack_qkv().
_QKV = re.compile(r'^(transformer\.encoder\.layers\.(\d+)\.self_attn\.'
                  r'in_proj_(weight|bias))\.([qkv])$')


def _resnet(part: str) -> Callable[[re.Match], str]:
    """transformers' ResNetBackbone block -> torchvision names.

    Stage ``s`` is ``layer{s+1}``; a block's ``layer.{j}`` is ``conv{j+1}``
    / ``bn{j+1}`` (``part`` plus the number, when the rule matched ``j``).
    """
    def replace(match: re.Match) -> str:
        name = part if match.lastindex == 2 else f'{part}{int(match[3]) + 1}'
        return f'{_BODY}layer{int(match[1]) + 1}.{match[2]}.{name}.'
    return replace


# (Hugging Face key start, official), most specific first.
HF_TO_OFFICIAL: List[Rule] = [
    (_BB + r'embedder\.embedder\.convolution\.', _BODY + 'conv1.'),
    (_BB + r'embedder\.embedder\.normalization\.', _BODY + 'bn1.'),
    (_STAGE + r'shortcut\.convolution\.', _resnet('downsample.0')),
    (_STAGE + r'shortcut\.normalization\.', _resnet('downsample.1')),
    (_STAGE + r'layer\.(\d+)\.convolution\.', _resnet('conv')),
    (_STAGE + r'layer\.(\d+)\.normalization\.', _resnet('bn')),
    (_BB, _BODY),  # timm's ResNet: torchvision names already
    (r'model\.input_projection\.', 'input_proj.'),
    (r'model\.query_position_embeddings\.', 'query_embed.'),
    (_ENC + r'self_attn\.([qkv])_proj\.(weight|bias)$',
     _OFF_ENC + r'self_attn.in_proj_\3.\2'),
    (_ENC + r'self_attn\.(?:out|o)_proj\.', _OFF_ENC + 'self_attn.out_proj.'),
    (_ENC + r'self_attn_layer_norm\.', _OFF_ENC + 'norm1.'),
    (_ENC + r'(?:mlp\.)?fc([12])\.', _OFF_ENC + r'linear\2.'),
    (_ENC + r'final_layer_norm\.', _OFF_ENC + 'norm2.'),
    (_DEC + r'(sa|ca)_', _OFF_DEC + r'\2_'),
    (_DEC + r'self_attn\.([qk])_(content|pos)_proj\.',
     _OFF_DEC + r'sa_\2\3_proj.'),
    (_DEC + r'self_attn\.v_proj\.', _OFF_DEC + 'sa_v_proj.'),
    (_DEC + r'encoder_attn\.([qk])_(content|pos)_proj\.',
     _OFF_DEC + r'ca_\2\3_proj.'),
    (_DEC + r'encoder_attn\.v_proj\.', _OFF_DEC + 'ca_v_proj.'),
    (_DEC + r'encoder_attn\.q_pos_sine_proj\.',
     _OFF_DEC + 'ca_qpos_sine_proj.'),
    (_DEC + r'self_attn\.(?:out|o)_proj\.', _OFF_DEC + 'self_attn.out_proj.'),
    (_DEC + r'encoder_attn\.(?:out|o)_proj\.',
     _OFF_DEC + 'cross_attn.out_proj.'),
    (_DEC + r'self_attn_layer_norm\.', _OFF_DEC + 'norm1.'),
    (_DEC + r'encoder_attn_layer_norm\.', _OFF_DEC + 'norm2.'),
    (_DEC + r'final_layer_norm\.', _OFF_DEC + 'norm3.'),
    (_DEC + r'(?:mlp\.)?fc([12])\.', _OFF_DEC + r'linear\2.'),
    (r'model\.decoder\.layernorm\.', 'transformer.decoder.norm.'),
    (r'model\.decoder\.(query_scale|ref_point_head)\.',
     r'transformer.decoder.\1.'),
    (r'class_labels_classifier\.', 'class_embed.'),
    (r'bbox_predictor\.', 'bbox_embed.'),
]


def _stack_qkv(renamed: Renamed) -> None:
    """Stack each encoder layer's q, k, v projections into ``in_proj``, in place.

    The members of an incomplete triple are reported in ``renamed.unmapped``.
    """
    groups: Dict[Tuple[str, str, str], Dict[str, str]] = {}
    for key in list(renamed.tensors):
        match = _QKV.match(key)
        if match:
            target, layer, param, proj = match.groups()
            groups.setdefault((target, layer, param), {})[proj] = key
    for (target, layer, param), keys in groups.items():
        tensors = {p: renamed.tensors.pop(k) for p, k in keys.items()}
        origins = {p: renamed.origins.pop(k) for p, k in keys.items()}
        if len(keys) < 3:
            missing = '/'.join(p for p in 'qkv' if p not in keys)
            for origin in origins.values():
                renamed.unmapped[origin] = (
                    f'encoder layer {layer} lacks the {missing} projection '
                    f'{param} needed to build in_proj_{param}')
            continue
        renamed.add(target, torch.cat([tensors[p] for p in 'qkv']),
                    ', '.join(origins[p] for p in 'qkv'))


def hf_to_official(state_dict: Mapping[str, Tensor]) -> Renamed:
    """Rename Hugging Face keys (either layout) to the official ones.

    Args:
        state_dict (Mapping[str, Tensor]): Weights of a
            ``ConditionalDetrForObjectDetection``.

    Returns:
        Renamed: The official ``model`` weights (class head still 91 rows
        indexed by category id), with the Hugging Face keys as origins.
    """
    official = rename(state_dict, HF_TO_OFFICIAL)
    _stack_qkv(official)
    return official
