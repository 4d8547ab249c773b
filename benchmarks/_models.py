"""Build mmdet's built-in Conditional DETR, ours, and Hugging Face's.

Shared by ``benchmarks/speed.py``; ours and mmdet's come from the shipped
configs (ours: ``configs/conditional_detr_r50_50e.py``, mmdet's:
``conditional-detr_r50_8xb2-50e_coco.py``) with ``backbone.init_cfg=None``;
Hugging Face's ``ConditionalDetrForObjectDetection`` from a config (offline,
random weights, transformers' own ResNet).
"""
import copy
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_xyxy_to_cxcywh
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper

ROOT = Path(__file__).resolve().parents[1]

import cdetr_mmdet  # noqa: F401  (registers our modules)
from cdetr_mmdet.convert import convert_state_dict
from cdetr_mmdet.models import CdetrConditionalDETR
from cdetr_testing import add_random_gts, padded_batch
OURS_CFG = ROOT / 'configs' / 'conditional_detr_r50_50e.py'
MMDET_CFG = (Path(__import__('mmdet').__file__).parent / '.mim' / 'configs' /
             'conditional_detr' / 'conditional-detr_r50_8xb2-50e_coco.py')

register_all_modules(init_default_scope=True)
# Per-parameter optimiser and init reports would drown the tables.
MMLogger.get_current_instance().setLevel('ERROR')


def model_cfg(which: str, depth: int = 50, num_layers: int = 6,
              num_queries: int = 300, num_classes: int = 80,
              channels_last: bool = False, hf_recipe: bool = False,
              group_detr: int = 1) -> Config:
    """The model config of ``which`` ('ours' or 'mmdet'), resized.

    Args:
        which (str): 'ours' or 'mmdet'.
        depth (int): ResNet depth (18, 34, 50, 101). Defaults to 50.
        num_layers (int): Encoder and decoder layers. Defaults to 6.
        num_queries (int): Object queries. Defaults to 300.
        num_classes (int): Classes. Defaults to 80.
        channels_last (bool): Our detector's ``channels_last`` option
            (ours only). Defaults to False.
        hf_recipe (bool): Train with Hugging Face's defaults instead of the
            official recipe: no dropout on the attention weights
            (``layer_cfg.attn_dropout=0``) and losses on the last decoder
            layer only (``bbox_head.aux_loss=False``) (ours only). Defaults
            to False.
        group_detr (int): Our detector's ``group_detr`` (Group DETR's K;
            ours only). Defaults to 1.

    Returns:
        Config: The model config, random backbone init.
    """
    cfg = Config.fromfile(str(OURS_CFG if which == 'ours' else MMDET_CFG))
    model = copy.deepcopy(cfg.model)
    model.backbone.update(depth=depth, init_cfg=None)
    if depth < 50:  # BasicBlock ResNets end with 512 channels
        model.neck.in_channels = [512]
    model.num_queries = num_queries
    model.bbox_head.num_classes = num_classes
    model.encoder.num_layers = num_layers
    model.decoder.num_layers = num_layers
    if (channels_last or hf_recipe or group_detr > 1) and which != 'ours':
        raise ValueError('channels_last, hf_recipe and group_detr are '
                         'options of our detector')
    if group_detr > 1:
        model.group_detr = group_detr
    if channels_last:
        model.channels_last = True
    if hf_recipe:
        model.encoder.layer_cfg.attn_dropout = 0.
        model.decoder.layer_cfg.attn_dropout = 0.
        model.bbox_head.aux_loss = False
    return model


def build_model(which: str, seed: int = 0, **cfg_kwargs) -> torch.nn.Module:
    """Build and initialise one model (random weights, fixed seed).

    Args:
        which (str): 'ours' or 'mmdet'.
        seed (int): Seed of the random init. Defaults to 0.
        **cfg_kwargs: See :func:`model_cfg`.
    """
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg(which, **cfg_kwargs))
    model.init_weights()
    return model


def load_mmdet_weights(model: torch.nn.Module,
                       state_dict: Dict[str, torch.Tensor]) -> None:
    """Load mmdet ``ConditionalDETR`` weights into ``model`` (strict).

    ``model`` is mmdet's (keys as they are) or ours (keys converted by the
    checkpoint converter's strict mmdet path). A Group DETR model (ours,
    ``group_detr=K``) gets the mmdet queries in each of its K groups (the
    values do not matter for timing; the shapes must).
    """
    if isinstance(model, CdetrConditionalDETR):
        if model.group_detr > 1:
            state_dict = dict(state_dict)
            state_dict['query_embedding.weight'] = state_dict[
                'query_embedding.weight'].repeat(model.group_detr, 1)
        state_dict = convert_state_dict(state_dict, 'mmdet', model,
                                        description='the mmdet weights')
    model.load_state_dict(state_dict, strict=True)


def optim_wrapper_cfg(amp: Optional[str] = None, device: str = 'cpu',
                      config: str = 'ours') -> dict:
    """A config's optimiser (AdamW, backbone lr x0.1, clip 0.1).

    Args:
        amp (str, optional): None for fp32, else 'bfloat16' or 'float16':
            ``CdetrCPUAmpOptimWrapper`` on CPU, mmengine's
            ``AmpOptimWrapper`` on CUDA.
        device (str): 'cpu' or 'cuda'. Defaults to 'cpu'.
        config (str): Whose ``optim_wrapper``: 'ours' (fused AdamW) or
            'mmdet' (mmdet's config, PyTorch's default AdamW).
    """
    path = OURS_CFG if config == 'ours' else MMDET_CFG
    cfg = copy.deepcopy(Config.fromfile(str(path)).optim_wrapper)
    cfg = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    if amp:
        cfg['type'] = ('CdetrCPUAmpOptimWrapper' if device == 'cpu' else
                       'AmpOptimWrapper')
        cfg['dtype'] = amp
    return cfg


def build_optimizer(model: torch.nn.Module, amp: Optional[str] = None,
                    device: str = 'cpu', config: str = 'ours'):
    """An mmengine ``OptimWrapper`` for ``model``; see :func:`optim_wrapper_cfg`."""
    return build_optim_wrapper(model, optim_wrapper_cfg(amp, device, config))


def make_inputs(batch: int, height: int, width: int, num_gts: int = 5,
                num_classes: int = 80, seed: int = 0,
                device: str = 'cpu') -> Tuple[torch.Tensor,
                                              List[DetDataSample]]:
    """A synthetic normalised batch of same-sized images and its data samples.

    Returns:
        tuple: ``inputs`` (batch, 3, height, width) and data samples with
        ``img_shape``, ``batch_input_shape``, ``scale_factor`` and
        ``num_gts`` random ``gt_instances`` (xyxy pixels) per image.
    """
    inputs, _, samples = padded_batch([(height, width)] * batch, seed=seed)
    add_random_gts(samples, [num_gts] * batch, num_classes, seed=seed + 1,
                   device=device)
    return inputs.to(device), samples


# transformers' ResNet per depth: (layer_type, blocks per stage, widths).
HF_RESNETS = {
    18: ('basic', [2, 2, 2, 2], [64, 128, 256, 512]),
    34: ('basic', [3, 4, 6, 3], [64, 128, 256, 512]),
    50: ('bottleneck', [3, 4, 6, 3], [256, 512, 1024, 2048]),
    101: ('bottleneck', [3, 4, 23, 3], [256, 512, 1024, 2048]),
}


def build_hf_model(official: bool, seed: int = 0, depth: int = 50,
                   num_layers: int = 6, num_queries: int = 300,
                   num_classes: int = 80) -> torch.nn.Module:
    """Hugging Face's ``ConditionalDetrForObjectDetection``, random weights.

    Its backbone stages 2-4 are made trainable as in the official code
    (transformers 5 freezes the whole non-timm backbone, which would halve
    its training step); the stem and stage 1 stay frozen, all batch norms
    are HF's frozen ones.

    Args:
        official (bool): The official recipe (attention dropout 0.1, losses
            on every decoder layer) instead of HF's defaults (attention
            dropout 0, losses on the last layer only).
        seed (int): Seed of the random init. Defaults to 0.
        depth, num_layers, num_queries, num_classes: As :func:`model_cfg`.
    """
    import transformers  # optional: only this variant needs it
    layer_type, depths, widths = HF_RESNETS[depth]
    config = transformers.ConditionalDetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False,
        backbone_config=transformers.ResNetConfig(
            layer_type=layer_type, depths=depths, hidden_sizes=widths,
            out_features=['stage4']),
        encoder_layers=num_layers, decoder_layers=num_layers,
        num_queries=num_queries, num_labels=num_classes,
        attention_dropout=0.1 if official else 0.,
        auxiliary_loss=official)
    torch.manual_seed(seed)
    model = transformers.ConditionalDetrForObjectDetection(config)
    trainable = tuple(f'model.backbone.model.encoder.stages.{i}.'
                      for i in (1, 2, 3))
    for name, param in model.named_parameters():
        if name.startswith('model.backbone.'):
            param.requires_grad_(name.startswith(trainable))
    return model


def hf_labels(samples: List[DetDataSample]) -> List[Dict[str, torch.Tensor]]:
    """HF's training targets (class ids, normalised cxcywh) from data samples."""
    labels = []
    for sample in samples:
        img_h, img_w = sample.metainfo['img_shape']
        boxes = sample.gt_instances.bboxes
        scale = boxes.new_tensor([img_w, img_h, img_w, img_h])
        labels.append(dict(class_labels=sample.gt_instances.labels,
                           boxes=bbox_xyxy_to_cxcywh(boxes) / scale))
    return labels


def hf_processor():
    """HF's Conditional DETR image processor (for its post-processing)."""
    import transformers
    cls = getattr(transformers, 'ConditionalDetrImageProcessorPil', None)
    return (cls or transformers.ConditionalDetrImageProcessor)()
