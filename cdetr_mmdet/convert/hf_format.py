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
  ``model.backbone.model``), which :data:`MODULE_TO_FILE` renames to the file
  layout first (the inverse of transformers' own load-time renaming).

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

from .key_rules import PrefixRule, Renamed, rename_by_prefix

# transformers 5 module names -> file names; every rule applies, in order.
MODULE_TO_FILE: List[Tuple[str, str]] = [
    (r'^model\.backbone\.model\.', 'model.backbone.conv_encoder.model.'),
    (r'\.(self_attn|encoder_attn)\.o_proj\.', r'.\1.out_proj.'),
    (r'\.layers\.(\d+)\.mlp\.fc([12])\.', r'.layers.\1.fc\2.'),
    (r'^(model\.decoder\.layers\.\d+)\.self_attn\.([qk])_(content|pos)_proj\.',
     r'\1.sa_\2\3_proj.'),
    (r'^(model\.decoder\.layers\.\d+)\.self_attn\.v_proj\.', r'\1.sa_v_proj.'),
    (r'^(model\.decoder\.layers\.\d+)\.encoder_attn\.'
     r'([qk])_(content|pos)_proj\.', r'\1.ca_\2\3_proj.'),
    (r'^(model\.decoder\.layers\.\d+)\.encoder_attn\.v_proj\.',
     r'\1.ca_v_proj.'),
    (r'^(model\.decoder\.layers\.\d+)\.encoder_attn\.q_pos_sine_proj\.',
     r'\1.ca_qpos_sine_proj.'),
]

_BACKBONE = 'model.backbone.conv_encoder.model.'

# transformers' ResNetBackbone -> torchvision names. Stage s is layer{s+1};
# a block's layer.{j} is conv{j+1} / bn{j+1}; the shortcut is downsample.
_HF_RESNET: List[Tuple[str, Callable[[re.Match], str]]] = [
    (r'embedder\.embedder\.convolution\.', lambda m: 'conv1.'),
    (r'embedder\.embedder\.normalization\.', lambda m: 'bn1.'),
    (r'encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.',
     lambda m: f'layer{int(m[1]) + 1}.{m[2]}.downsample.0.'),
    (r'encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.',
     lambda m: f'layer{int(m[1]) + 1}.{m[2]}.downsample.1.'),
    (r'encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.convolution\.',
     lambda m: f'layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}.'),
    (r'encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.normalization\.',
     lambda m: f'layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}.'),
]

_ENCODER_QKV = re.compile(
    r'^model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$')

_ENC = 'model.encoder.layers.{i}.'
_OFF_ENC = 'transformer.encoder.layers.{i}.'
_DEC = 'model.decoder.layers.{i}.'
_OFF_DEC = 'transformer.decoder.layers.{i}.'

# (Hugging Face file prefix, official prefix), most specific first. The
# backbone rule passes timm (= torchvision) names through unchanged.
HF_TO_OFFICIAL: List[PrefixRule] = [
    (_BACKBONE, 'backbone.0.body.'),
    ('model.input_projection.', 'input_proj.'),
    ('model.query_position_embeddings.', 'query_embed.'),
    (_ENC + 'self_attn.out_proj.', _OFF_ENC + 'self_attn.out_proj.'),
    (_ENC + 'self_attn_layer_norm.', _OFF_ENC + 'norm1.'),
    (_ENC + 'fc1.', _OFF_ENC + 'linear1.'),
    (_ENC + 'fc2.', _OFF_ENC + 'linear2.'),
    (_ENC + 'final_layer_norm.', _OFF_ENC + 'norm2.'),
    (_DEC + 'sa_', _OFF_DEC + 'sa_'),
    (_DEC + 'ca_', _OFF_DEC + 'ca_'),
    (_DEC + 'self_attn.out_proj.', _OFF_DEC + 'self_attn.out_proj.'),
    (_DEC + 'encoder_attn.out_proj.', _OFF_DEC + 'cross_attn.out_proj.'),
    (_DEC + 'self_attn_layer_norm.', _OFF_DEC + 'norm1.'),
    (_DEC + 'encoder_attn_layer_norm.', _OFF_DEC + 'norm2.'),
    (_DEC + 'final_layer_norm.', _OFF_DEC + 'norm3.'),
    (_DEC + 'fc1.', _OFF_DEC + 'linear1.'),
    (_DEC + 'fc2.', _OFF_DEC + 'linear2.'),
    ('model.decoder.layernorm.', 'transformer.decoder.norm.'),
    ('model.decoder.query_scale.', 'transformer.decoder.query_scale.'),
    ('model.decoder.ref_point_head.', 'transformer.decoder.ref_point_head.'),
    ('class_labels_classifier.', 'class_embed.'),
    ('bbox_predictor.', 'bbox_embed.'),
]


def to_file_layout(key: str) -> str:
    """Rename a transformers 5 module key to the hub file layout."""
    for pattern, replacement in MODULE_TO_FILE:
        key = re.sub(pattern, replacement, key)
    if key.startswith(_BACKBONE):
        rest = key[len(_BACKBONE):]
        for pattern, replace in _HF_RESNET:
            match = re.match(pattern, rest)
            if match:  # transformers ResNet -> torchvision names
                return _BACKBONE + replace(match) + rest[match.end():]
    return key


def _fuse_encoder_qkv(state_dict: Dict[str, Tensor],
                      renamed: Renamed) -> None:
    """Stack each encoder layer's q, k, v projections into ``in_proj``.

    Moves the q/k/v entries of ``state_dict`` into ``renamed``; the members
    of an incomplete triple are reported in ``renamed.unmapped``.
    """
    groups: Dict[Tuple[str, str], Dict[str, str]] = {}
    for key in state_dict:
        match = _ENCODER_QKV.match(key)
        if match:
            layer, proj, param = match.groups()
            groups.setdefault((layer, param), {})[proj] = key
    for (layer, param), keys in sorted(groups.items()):
        by_proj = {proj: state_dict.pop(key) for proj, key in keys.items()}
        if len(keys) < 3:
            missing = '/'.join(p for p in 'qkv' if p not in keys)
            for key in keys.values():
                renamed.unmapped[key] = (
                    f'encoder layer {layer} lacks the {missing} projection '
                    f'{param} needed to build in_proj_{param}')
            continue
        renamed.add(
            f'transformer.encoder.layers.{layer}.self_attn.in_proj_{param}',
            torch.cat([by_proj[p] for p in 'qkv']),
            ', '.join(keys[p] for p in 'qkv'))


def hf_to_official(state_dict: Mapping[str, Tensor]) -> Renamed:
    """Rename Hugging Face keys (either layout) to the official ones.

    Args:
        state_dict (Mapping[str, Tensor]): Weights of a
            ``ConditionalDetrForObjectDetection``.

    Returns:
        Renamed: The official ``model`` weights (class head still 91 rows
        indexed by category id), with the Hugging Face keys as origins.
    """
    file_layout = Renamed()  # both layouts -> the file layout
    for key, tensor in state_dict.items():
        file_layout.add(to_file_layout(key), tensor, key)
    remaining = dict(file_layout.tensors)
    official = Renamed()
    _fuse_encoder_qkv(remaining, official)
    by_prefix = rename_by_prefix(remaining, HF_TO_OFFICIAL)
    for key, tensor in by_prefix.tensors.items():
        official.add(key, tensor, by_prefix.origins[key])
    official.unmapped.update(by_prefix.unmapped)
    for key, sources in by_prefix.collisions.items():
        official.collisions.setdefault(key, []).extend(sources)
    return file_layout.then(official)
