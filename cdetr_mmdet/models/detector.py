"""The Conditional DETR detector (registered in ``MODELS``)."""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.detectors import DETR
from mmdet.models.layers import SinePositionalEncoding
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from torch import Tensor, nn


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
          -> forward_transformer        ours, straight-line:
               pre_transformer          ours: padding mask (bs, n) or None,
                                        sine positions (bs, n, d), flattened
                                        features (bs, n, d)
               forward_encoder          ours -> CdetrTransformerEncoder:
                                        memory (bs, n, d)
               pre_decoder              ours: zero content queries and the
                                        object queries (bs, q, d) each
               forward_decoder          ours -> CdetrTransformerDecoder:
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
            ``torch.channels_last`` memory format (NHWC), which oneDNN and
            cuDNN convolutions prefer, notably under bf16/fp16 autocast. The
            results equal the default NCHW ones up to float rounding.
            Defaults to False.
        frozen_channels_last (bool): On CPU, run the part of an mmdet
            ``ResNet`` backbone that takes no gradient in NHWC: the frozen
            stem and stages (``frozen_stages``) when gradients are taken,
            the whole backbone under ``torch.no_grad``. PyTorch's NCHW CPU
            kernels are slow there (the stem's 3x3 max-pool ~9x, the
            frozen stem + ``layer1`` forward ~1.4x at 512x512); the
            trainable stages stay NCHW, whose backward NHWC does not speed
            up. Outputs equal NCHW's up to float rounding. No effect on
            other devices, with ``channels_last=True`` or on backbones
            without ``frozen_stages``/``res_layers``. Defaults to True.
        group_detr (int): Group DETR's K (Chen et al., arXiv 2207.13085; the
            official GroupDETR branch's ``--group_detr``): in training, K
            groups of ``num_queries`` object queries (``query_embedding``
            has K * N rows), self-attention inside each group, one-to-one
            matching per group and loss normalisers times K; the reference
            MLP, decoder layers and head are shared. In eval mode (predict,
            test, export, attention tools) only the first N rows are used:
            the same computation as a K = 1 model made of them. Filled into
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
        frozen_end = self._frozen_stages_end()
        if frozen_end is not None:
            frozen_end.register_forward_hook(self._trainable_stages_in_nchw)

    def _frozen_stages_end(self) -> Optional[nn.Module]:
        """The backbone's last frozen module, or None (nothing frozen)."""
        frozen = getattr(self.backbone, 'frozen_stages', -1)
        layers = getattr(self.backbone, 'res_layers', None)
        if frozen < 0 or layers is None:
            return None
        if frozen == 0:  # the stem alone
            return self.backbone.maxpool
        return getattr(self.backbone, layers[min(frozen, len(layers)) - 1])

    def _trainable_stages_in_nchw(self, module: nn.Module, args: tuple,
                                  output: Tensor) -> Optional[Tensor]:
        """Forward hook: the frozen stages' NHWC output back to NCHW.

        Only when gradients are taken (the trainable stages follow) and the
        whole backbone is not channels-last by option.
        """
        if self.channels_last or not torch.is_grad_enabled():
            return None
        return output.contiguous()  # (bs, c, h, w) NCHW

    def _init_layers(self) -> None:
        """Build the positional encoding, transformer and object queries."""
        self.positional_encoding = SinePositionalEncoding(
            **self.positional_encoding)
        self.encoder = MODELS.build(self.encoder)
        decoder_cfg = dict(self.decoder)
        if decoder_cfg.get('reference') == 'learned':
            # One free reference point per object query.
            decoder_cfg.setdefault('num_queries', self.num_queries)
        if self.group_detr > 1:  # grouped self-attention (K = 1: untouched)
            decoder_cfg['num_groups'] = self.group_detr
        self.decoder = MODELS.build(decoder_cfg)
        self.embed_dims = self.encoder.embed_dims
        if self.decoder.embed_dims != self.embed_dims:
            raise ValueError(
                f'encoder embed_dims ({self.embed_dims}) != decoder '
                f'embed_dims ({self.decoder.embed_dims})')
        if self.positional_encoding.num_feats * 2 != self.embed_dims:
            raise ValueError(
                'positional_encoding.num_feats must be embed_dims / 2 = '
                f'{self.embed_dims // 2}, got '
                f'{self.positional_encoding.num_feats}')
        # Group DETR: K groups of N object queries, group g in rows g*N..
        self.query_embedding = nn.Embedding(
            self.num_queries * self.group_detr, self.embed_dims)

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
        nhwc = self.channels_last or (
            self.frozen_channels_last and batch_inputs.device.type == 'cpu'
            and self._frozen_stages_end() is not None)
        if not nhwc:
            return super().extract_feat(batch_inputs)
        feats = super().extract_feat(
            batch_inputs.contiguous(memory_format=torch.channels_last))
        # The transformer flattens with ``view``: back to NCHW (small tensors).
        return tuple(feat.contiguous() for feat in feats)

    def forward_transformer(self, img_feats: Tuple[Tensor],
                            batch_data_samples: SampleList) -> Dict:
        """Encoder and decoder on the neck features.

        Args:
            img_feats (tuple[Tensor]): Neck outputs; the last one,
                (bs, d, h, w), is used.
            batch_data_samples (list[DetDataSample]): With metainfo
                ``batch_input_shape`` and ``img_shape``.

        Returns:
            dict: ``hidden_states`` (num_layers, bs, num_queries, d) and
            ``references`` (bs, num_queries, 2), the head's inputs.
        """
        feat, mask, pos = self.pre_transformer(img_feats[-1],
                                               batch_data_samples)
        memory = self.forward_encoder(feat, mask, pos)
        query, query_pos = self.pre_decoder(memory.shape[0])
        hidden_states, references = self.forward_decoder(
            query, query_pos, memory, mask, pos)
        return dict(hidden_states=hidden_states, references=references)

    def pre_transformer(
        self, feat: Tensor, batch_data_samples: SampleList
    ) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        """Padding mask and sine positional encoding of the feature map.

        As mmdet's ``DETR.pre_transformer``: no mask when no image of the
        batch is padded; otherwise the input-resolution padding mask
        downsampled (nearest) to the feature map.

        Args:
            feat (Tensor): Neck features, (bs, d, h, w).
            batch_data_samples (list[DetDataSample]): With metainfo
                ``batch_input_shape`` (H_pad, W_pad) and ``img_shape``.

        Returns:
            tuple: Flattened features (bs, n, d); the mask (bs, n), True at
            padding, or None; the positional encoding (bs, n, d).
        """
        bs = feat.shape[0]
        pad_h, pad_w = batch_data_samples[0].batch_input_shape
        img_shapes: List[Tuple[int, int]] = [
            tuple(s.img_shape) for s in batch_data_samples]
        if all(shape == (pad_h, pad_w) for shape in img_shapes):
            mask = None
            pos = self.positional_encoding(None, input=feat)  # (bs, d, h, w)
        else:
            mask = feat.new_ones((bs, pad_h, pad_w))
            for i, (img_h, img_w) in enumerate(img_shapes):
                mask[i, :img_h, :img_w] = 0
            mask = F.interpolate(mask[:, None], size=feat.shape[-2:]).to(
                torch.bool)[:, 0]  # (bs, h, w)
            pos = self.positional_encoding(mask)  # (bs, d, h, w)
            mask = mask.flatten(1)  # (bs, n)
        # (bs, d, h, w) -> (bs, n, d)
        return (feat.flatten(2).transpose(1, 2),
                mask, pos.flatten(2).transpose(1, 2))

    def forward_encoder(self, feat: Tensor, feat_mask: Optional[Tensor],
                        feat_pos: Tensor) -> Tensor:
        """Run the encoder.

        Args:
            feat (Tensor): Flattened features, (bs, n, d).
            feat_mask (Tensor | None): (bs, n), True at padding.
            feat_pos (Tensor): Positional encoding, (bs, n, d).

        Returns:
            Tensor: The memory, (bs, n, d).
        """
        return self.encoder(feat, feat_pos, feat_mask)

    def object_queries(self) -> Tensor:
        """The object-query rows the current mode uses.

        Group DETR: all K groups in training, the first group in eval mode
        (as the official GroupDETR branch); with K = 1 the whole table.

        Returns:
            Tensor: (K * N, d) in training, (N, d) in eval.
        """
        weight = self.query_embedding.weight  # (K * N, d)
        if self.training or self.group_detr == 1:
            return weight
        return weight[:self.num_queries]  # (N, d): group 0

    def pre_decoder(self, batch_size: int) -> Tuple[Tensor, Tensor]:
        """Zero content queries and the learnt object queries.

        Args:
            batch_size (int): bs.

        Returns:
            tuple[Tensor, Tensor]: ``query`` (zeros) and ``query_pos``,
            (bs, nq, d) each; nq = K * num_queries in training with
            ``group_detr=K``, num_queries otherwise.
        """
        query_pos = self.object_queries()[None].expand(batch_size, -1, -1)
        return torch.zeros_like(query_pos), query_pos

    def forward_decoder(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                        memory_mask: Optional[Tensor],
                        memory_pos: Tensor) -> Tuple[Tensor, Tensor]:
        """Run the conditional decoder.

        Args:
            query (Tensor): Zeros, (bs, num_queries, d).
            query_pos (Tensor): Object queries, (bs, num_queries, d).
            memory (Tensor): Encoder output, (bs, n, d).
            memory_mask (Tensor | None): (bs, n), True at padding.
            memory_pos (Tensor): Positional encoding, (bs, n, d).

        Returns:
            tuple[Tensor, Tensor]: ``hidden_states``
            (num_layers, bs, num_queries, d) and ``references``
            (bs, num_queries, 2), the head's inputs.
        """
        return self.decoder(query, query_pos, memory, memory_pos, memory_mask)
