"""The Conditional DETR detector (registered in ``MODELS``)."""
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.models.detectors import DETR
from mmdet.models.layers import SinePositionalEncoding
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from torch import Tensor, nn

from ..checkpoint.state_dict_check import check_load_into
from ..speedups.channels_last import nchw_after_frozen_stages, runs_nhwc
from .transformer import ConditionalDETRTransformer, feature_padding_mask


@MODELS.register_module()
class CdetrConditionalDETR(DETR):
    """Conditional DETR (Meng et al., ICCV 2021) on mmdet's DETR pipeline.

    The whole forward, with the method that runs each step (bs images,
    d = embed_dims, n = h * w feature tokens, q = num_queries, L = decoder
    layers)::

        images (bs, 3, H, W) + data samples
          -> data_preprocessor          mmdet DetDataPreprocessor: normalise,
                                        pad to (bs, 3, H_pad, W_pad)
          -> extract_feat               ours: mmdet ResNet backbone + 1x1
                                        ChannelMapper neck -> (bs, d, h, w)
          -> forward_transformer        ours:
               padding_mask             ours: (bs, h, w) True at padding,
                                        or None when nothing is padded
               transformer              ConditionalDETRTransformer (the
                                        one core, models/transformer.py):
                                        sine positions, encoder memory
                                        (bs, n, d), object queries (bs, q, d),
                                        conditional decoder ->
                                        hidden_states (L, bs, q, d),
                                        references s (bs, q, 2)
          -> bbox_head.loss             ours, CdetrHead: logits (L, bs, q, C),
                                        boxes (L, bs, q, 4); the matcher
                                        (CdetrHungarianMatcher.match) pairs
                                        queries and ground truths; focal, L1
                                        and GIoU losses per layer
             or bbox_head.predict       ours, CdetrHead: top-k detections of
                                        the last layer in image pixels

    ``loss`` (refused on a model folded by ``optimize_for_inference``),
    ``predict`` and ``_forward`` are mmdet's ``DetectionTransformer`` ones: ``extract_feat`` -> ``forward_transformer``
    -> ``bbox_head.loss`` / ``predict`` / ``forward``. Every step in between
    is ours and passes its arguments explicitly, so none of mmdet's
    ``DETR`` glue (and none of its keyword names) is on our path.

    Config keys: ``encoder`` (kwargs of :class:`CdetrTransformerEncoder`),
    ``decoder`` (a ``MODELS`` config, e.g. ``CdetrTransformerDecoder``),
    ``positional_encoding`` (mmdet ``SinePositionalEncoding``),
    ``channels_last``, ``frozen_channels_last``, ``group_detr`` (see below),
    plus mmdet
    ``DETR``'s ``backbone``,
    ``neck``, ``bbox_head``, ``num_queries``, ``train_cfg``, ``test_cfg``,
    ``data_preprocessor``.

    Args:
        channels_last (bool): Run the backbone and neck in the
            ``torch.channels_last`` memory format (NHWC). Results equal NCHW
            ones up to float rounding. Defaults to False.
        frozen_channels_last (bool): On CPU, run the frozen part of an mmdet
            ``ResNet`` backbone (all of it under ``torch.no_grad``) in NHWC.
            Defaults to True. Both: :mod:`cdetr_mmdet.speedups.channels_last`.
        group_detr (int): Group DETR's K (Chen et al., arXiv 2207.13085; the
            official GroupDETR branch's ``--group_detr``): in training, K
            groups of ``num_queries`` object queries (``query_embedding``
            has K * N rows), self-attention inside each group, one-to-one
            matching per group and loss normalisers times K; the reference
            MLP, decoder layers and head are shared. In eval mode (predict,
            test, export, attention tools) only the first N rows are used:
            the same computation as a K = 1 model made of them. Filled into
            the core (``ConditionalDETRTransformer.num_groups``),
            ``decoder.num_groups`` and ``bbox_head.num_groups``. Defaults to
            1 (Conditional DETR as published). See docs/group_detr.md.
        *args, **kwargs: mmdet ``DETR``'s arguments.
    """

    def __init__(self, *args, channels_last: bool = False,
                 frozen_channels_last: bool = True, group_detr: int = 1,
                 **kwargs) -> None:
        if not isinstance(group_detr, int) or group_detr < 1:
            raise ValueError(f'group_detr must be an int >= 1, got '
                             f'{group_detr!r}')
        for part in ('decoder', 'bbox_head'):
            if 'num_groups' in (kwargs.get(part) or {}):
                raise KeyError(f'model.{part}.num_groups must not be set: '
                               'set model.group_detr, which fills it in')
        # Read by _init_layers, which mmdet's __init__ calls.
        self.group_detr = group_detr
        if group_detr > 1 and kwargs.get('bbox_head') is not None:
            # The head matches and normalises per group (K = 1: untouched).
            kwargs['bbox_head'] = dict(kwargs['bbox_head'],
                                       num_groups=group_detr)
        super().__init__(*args, **kwargs)
        self.channels_last = channels_last
        self.frozen_channels_last = frozen_channels_last
        # Set by cdetr_mmdet.apis.optimize_for_inference (batch norms folded).
        self.folded_for_inference = False
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
            if self.with_neck:
                self.neck.to(memory_format=torch.channels_last)
        nchw_after_frozen_stages(self)

    def _init_layers(self) -> None:
        """Build the transformer core and register its children as ours.

        The core (:class:`ConditionalDETRTransformer`) is kept outside
        ``_modules`` (in ``__dict__``) while its children are registered
        here under their own names: checkpoint keys stay ``encoder.*``,
        ``decoder.*`` and ``query_embedding.weight`` (and mmdet's
        ``DETR.init_weights`` finds ``self.encoder`` / ``self.decoder``).
        """
        decoder_cfg = dict(self.decoder)
        reference = decoder_cfg.get('reference')
        # One free reference point per object query.
        if reference == 'learned':
            decoder_cfg.setdefault('num_queries', self.num_queries)
        elif isinstance(reference, dict) and reference.get(
                'type') == 'CdetrLearnedReference':
            decoder_cfg['reference'] = dict(reference)
            decoder_cfg['reference'].setdefault('num_queries',
                                                self.num_queries)
        if self.group_detr > 1:  # grouped self-attention (K = 1: untouched)
            decoder_cfg['num_groups'] = self.group_detr
        core = ConditionalDETRTransformer(
            encoder=MODELS.build(self.encoder),
            decoder=MODELS.build(decoder_cfg),
            positional_encoding=SinePositionalEncoding(
                **self.positional_encoding),
            num_queries=self.num_queries, num_groups=self.group_detr)
        self.__dict__['transformer'] = core  # not a child: no key prefix
        # The registration order is the state-dict key order of before.
        self.positional_encoding = core.positional_encoding
        self.encoder = core.encoder
        self.decoder = core.decoder
        self.embed_dims = core.embed_dims
        self.query_embedding = core.query_embedding

    def init_weights(self) -> None:
        """Initialise as the official code does.

        Xavier-uniform for every matrix of the encoder and decoder (mmdet's
        ``DETR.init_weights``); the input projection gets PyTorch's default
        ``Conv2d`` init (the official ``input_proj``) instead of the kaiming
        init of mmcv's ``ConvModule``.
        """
        super().init_weights()
        if getattr(self, 'neck', None) is not None:
            for module in self.neck.modules():
                if isinstance(module, nn.Conv2d):
                    module.reset_parameters()

    def _load_from_state_dict(self, state_dict: dict, prefix: str,
                              local_metadata: dict, *args, **kwargs) -> None:
        """Refuse a state dict that does not fit, then load as torch does.

        mmengine's ``load_checkpoint`` (``Runner.load_checkpoint``, mmdet's
        ``init_detector`` and ``DetInferencer``) loads with ``strict=False``
        and only logs what did not fit. Both it and torch's
        ``load_state_dict`` call this method first, with the whole state dict,
        so the check here (``CheckpointMismatchError``, see
        :func:`~cdetr_mmdet.checkpoint.state_dict_check.check_load_into`) runs on
        every path before any tensor is copied.
        """
        check_load_into(self, state_dict, prefix, local_metadata)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      *args, **kwargs)

    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """mmdet's ``loss``, refused on a model folded for inference.

        Raises:
            RuntimeError: The model went through ``optimize_for_inference``.
        """
        if self.folded_for_inference:
            raise RuntimeError(
                'this model was folded for inference (optimize_for_inference: its backbone '
                'batch norms are merged into the convolutions), so it cannot be trained; '
                'build it again from its config and checkpoint to train it')
        return super().loss(batch_inputs, batch_data_samples)

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor]:
        """Backbone and neck features, (bs, c, h, w) each, contiguous NCHW.

        Args:
            batch_inputs (Tensor): Images, (bs, 3, H, W).

        Returns:
            tuple[Tensor]: The neck outputs.
        """
        if not runs_nhwc(self.channels_last, self.frozen_channels_last,
                         batch_inputs, self.backbone):
            return super().extract_feat(batch_inputs)
        feats = super().extract_feat(
            batch_inputs.contiguous(memory_format=torch.channels_last))
        # The transformer flattens with ``view``: back to NCHW (small tensors).
        return tuple(feat.contiguous() for feat in feats)

    def forward_transformer(self, img_feats: Tuple[Tensor],
                            batch_data_samples: SampleList) -> Dict:
        """The transformer core on the last neck features.

        Args:
            img_feats (tuple[Tensor]): Neck outputs; the last one,
                (bs, d, h, w), is used.
            batch_data_samples (list[DetDataSample]): With metainfo
                ``batch_input_shape`` and ``img_shape``.

        Returns:
            dict: ``hidden_states`` (num_layers, bs, num_queries, d) and
            ``references`` (bs, num_queries, 2), the head's inputs.
        """
        feat = img_feats[-1]
        mask = self.padding_mask(feat, batch_data_samples)
        hidden_states, references = self.transformer(feat, mask)
        return dict(hidden_states=hidden_states, references=references)

    @staticmethod
    def padding_mask(feat: Tensor,
                     batch_data_samples: SampleList) -> Optional[Tensor]:
        """The feature map's padding mask from the data samples' shapes.

        As mmdet's ``DETR.pre_transformer``: None when no image of the batch
        is padded (the positional encoding then needs no mask); otherwise
        the input-resolution padding mask down-sampled (nearest) to the
        feature map by :func:`feature_padding_mask`.

        Args:
            feat (Tensor): Neck features, (bs, d, h, w).
            batch_data_samples (list[DetDataSample]): With metainfo
                ``batch_input_shape`` (H_pad, W_pad) and ``img_shape``.

        Returns:
            Tensor | None: (bs, h, w) bool, True at padding.
        """
        pad_h, pad_w = batch_data_samples[0].batch_input_shape
        img_shapes: List[Tuple[int, int]] = [
            tuple(s.img_shape) for s in batch_data_samples]
        if all(shape == (pad_h, pad_w) for shape in img_shapes):
            return None
        pad_mask = torch.ones((feat.shape[0], pad_h, pad_w), dtype=torch.bool,
                              device=feat.device)
        for i, (img_h, img_w) in enumerate(img_shapes):
            pad_mask[i, :img_h, :img_w] = False
        return feature_padding_mask(pad_mask, feat.shape[-2:])
