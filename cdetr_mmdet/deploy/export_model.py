"""The exportable detector: padded batch and mask in, top-k detections out."""
from typing import Tuple

import torch
from torch import Tensor, nn

from ..models import CdetrConditionalDETR
from ..models.transformer import feature_padding_mask

INPUT_NAMES = ('inputs', 'mask')
OUTPUT_NAMES = ('scores', 'labels', 'boxes')


class CdetrExportModel(nn.Module):
    """Conditional DETR inference as one traceable function.

    Down-samples the input padding mask to the feature map (the detector
    builds it from the data samples' ``img_shape``, which a graph cannot
    take), runs the detector's backbone, its transformer core
    (:class:`ConditionalDETRTransformer`, the detector's own forward; in
    eval mode, so a Group DETR model runs its first query group only, as a
    K = 1 model made of it) and the head's own box decoding and top-k, and
    scales the boxes by each image's unpadded size, read from the mask (images sit top-left, as
    mmdet's ``DetDataPreprocessor`` pads them).

    Args:
        detector (CdetrConditionalDETR): The model, in eval mode.
        raw (bool): Return the last decoder layer's class logits
            (bs, num_queries, num_classes) and normalised cxcywh boxes
            (bs, num_queries, 4) instead of the top-k detections: every
            (query, class) pair, for parity checks of models whose top-k is
            all ties (e.g. random weights). Defaults to False.
    """

    def __init__(self, detector: CdetrConditionalDETR,
                 raw: bool = False) -> None:
        super().__init__()
        if not isinstance(detector, CdetrConditionalDETR):
            raise TypeError('CdetrExportModel exports CdetrConditionalDETR, '
                            f'got {type(detector).__name__}')
        self.detector = detector.eval()
        self.raw = raw

    def forward(self, inputs: Tensor,
                mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Detect.

        Args:
            inputs (Tensor): Normalised images, zero-padded bottom-right,
                (bs, 3, H, W) float32.
            mask (Tensor): (bs, H, W) bool, True at padding.

        Returns:
            tuple[Tensor, Tensor, Tensor]: ``scores`` (bs, k) sigmoid scores,
            best first; ``labels`` (bs, k) int64; ``boxes`` (bs, k, 4) xyxy in
            input pixels (of the unpadded, resized image).
        """
        detector = self.detector
        feat = detector.extract_feat(inputs)[-1]  # (bs, d, h, w)
        hidden_states, references = detector.transformer(
            feat, feature_padding_mask(mask, feat.shape[-2:]))
        head = detector.bbox_head
        cls_logits, bbox_preds = head(hidden_states[-1:], references)
        if self.raw:
            return cls_logits[0], bbox_preds[0]
        scores, labels, boxes = head.topk_detections(cls_logits[0],
                                                     bbox_preds[0])
        valid = (~mask).float()
        img_h = valid[:, :, 0].sum(1)  # (bs,) rows of the unpadded image
        img_w = valid[:, 0, :].sum(1)  # (bs,)
        size = torch.stack([img_w, img_h, img_w, img_h], dim=1)  # (bs, 4)
        return scores, labels, boxes * size[:, None, :]
