"""The Conditional DETR detector (registered in ``MODELS``)."""
from typing import Dict, Tuple

import torch
from mmdet.models.detectors import DETR
from mmdet.models.layers import SinePositionalEncoding
from mmdet.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class CdetrConditionalDETR(DETR):
    """Conditional DETR (Meng et al., ICCV 2021) on mmdet's DETR pipeline.

    Reuses mmdet's ``DETR`` for masks, positional encoding and the
    loss/predict plumbing; overrides ``_init_layers``, ``init_weights``,
    ``extract_feat`` and ``forward_decoder``.

    Config keys: ``encoder`` (kwargs of :class:`CdetrTransformerEncoder`),
    ``decoder`` (a ``MODELS`` config, e.g. ``CdetrTransformerDecoder``),
    ``positional_encoding`` (mmdet ``SinePositionalEncoding``),
    ``channels_last`` (see below), plus mmdet ``DETR``'s ``backbone``,
    ``neck``, ``bbox_head``, ``num_queries``, ``train_cfg``, ``test_cfg``,
    ``data_preprocessor``.

    Args:
        channels_last (bool): Run the backbone and neck in the
            ``torch.channels_last`` memory format (NHWC), which oneDNN and
            cuDNN convolutions prefer, notably under bf16/fp16 autocast. The
            results equal the default NCHW ones up to float rounding.
            Defaults to False.
        *args, **kwargs: mmdet ``DETR``'s arguments.
    """

    def __init__(self, *args, channels_last: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channels_last = channels_last
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
            if self.with_neck:
                self.neck.to(memory_format=torch.channels_last)

    def _init_layers(self) -> None:
        """Build the positional encoding, transformer and object queries."""
        self.positional_encoding = SinePositionalEncoding(
            **self.positional_encoding)
        self.encoder = MODELS.build(self.encoder)
        decoder_cfg = dict(self.decoder)
        if decoder_cfg.get('reference') == 'learned':
            # One free reference point per object query.
            decoder_cfg.setdefault('num_queries', self.num_queries)
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
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)

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

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor]:
        """Backbone and neck features, (bs, c, h, w) each, contiguous NCHW.

        Args:
            batch_inputs (Tensor): Images, (bs, 3, H, W).

        Returns:
            tuple[Tensor]: The neck outputs.
        """
        if not self.channels_last:
            return super().extract_feat(batch_inputs)
        feats = super().extract_feat(
            batch_inputs.contiguous(memory_format=torch.channels_last))
        # The transformer flattens with ``view``: back to NCHW (small tensors).
        return tuple(feat.contiguous() for feat in feats)

    def forward_decoder(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                        memory_mask: Tensor, memory_pos: Tensor) -> Dict:
        """Run the conditional decoder.

        Args:
            query (Tensor): Zeros, (bs, num_queries, d).
            query_pos (Tensor): Object queries, (bs, num_queries, d).
            memory (Tensor): Encoder output, (bs, num_keys, d).
            memory_mask (Tensor | None): (bs, num_keys), True at padding.
            memory_pos (Tensor): Positional encoding, (bs, num_keys, d).

        Returns:
            dict: ``hidden_states`` (num_layers, bs, num_queries, d) and
            ``references`` (bs, num_queries, 2), the head's inputs.
        """
        hidden_states, references = self.decoder(
            query=query, query_pos=query_pos, memory=memory,
            memory_pos=memory_pos, memory_mask=memory_mask)
        return dict(hidden_states=hidden_states, references=references)
