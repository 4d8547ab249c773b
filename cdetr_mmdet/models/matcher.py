"""Batched Hungarian matcher (registered in ``TASK_UTILS``)."""
from typing import List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_overlaps
from scipy.optimize import linear_sum_assignment
from torch import Tensor


class MatchIndices(NamedTuple):
    """Matched pairs of all decoder layers and images, each (num_pairs,) long.

    ``gt`` indexes the batch's ground truths concatenated in image order.
    """
    layer: Tensor
    image: Tensor
    query: Tensor
    gt: Tensor


@TASK_UTILS.register_module()
class CdetrHungarianMatcher:
    """One-to-one matching of queries to ground truths, as in the official code.

    Cost = ``cost_class * focal + cost_bbox * L1(cxcywh) - cost_giou * GIoU``.
    The costs of every decoder layer and image are computed in one batched
    pass in fp32 (also under autocast) and copied to the host once; then
    :func:`scipy.optimize.linear_sum_assignment` runs per (layer, image) or,
    with Group DETR's ``num_groups=K``, per (layer, image, group): each group
    of N consecutive queries is matched one-to-one against all ground truths
    of the image, in the same single cost pass and host copy.

    Args:
        cost_class (float): Weight of the focal class cost. Defaults to 2.0.
        cost_bbox (float): Weight of the L1 box cost. Defaults to 5.0.
        cost_giou (float): Weight of the GIoU cost. Defaults to 2.0.
        alpha (float): Focal cost alpha. Defaults to 0.25.
        gamma (float): Focal cost gamma. Defaults to 2.0.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0,
                 cost_giou: float = 2.0, alpha: float = 0.25,
                 gamma: float = 2.0) -> None:
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.alpha = alpha
        self.gamma = gamma

    def cost_terms(self, cls_logits: Tensor, bbox_preds: Tensor,
                   gt_labels: Tensor, gt_bboxes: Tensor) -> dict:
        """Weighted cost terms of all predictions against all ground truths.

        Args:
            cls_logits (Tensor): (num_preds, num_classes) logits.
            bbox_preds (Tensor): (num_preds, 4) normalised cxcywh.
            gt_labels (Tensor): (num_gts,) labels.
            gt_bboxes (Tensor): (num_gts, 4) normalised cxcywh.

        Returns:
            dict[str, Tensor]: ``class``, ``bbox`` and ``giou`` costs, each
            (num_preds, num_gts), fp32.
        """
        prob = cls_logits.float().sigmoid()[:, gt_labels]  # (np, ngt)
        neg = (1 - self.alpha) * prob**self.gamma * -(1 - prob + 1e-8).log()
        pos = self.alpha * (1 - prob)**self.gamma * -(prob + 1e-8).log()
        bbox_preds, gt_bboxes = bbox_preds.float(), gt_bboxes.float()
        giou = bbox_overlaps(bbox_cxcywh_to_xyxy(bbox_preds),
                             bbox_cxcywh_to_xyxy(gt_bboxes), mode='giou')
        return dict(
            cls=self.cost_class * (pos - neg),
            bbox=self.cost_bbox * torch.cdist(bbox_preds, gt_bboxes, p=1),
            giou=-self.cost_giou * giou)

    @torch.no_grad()
    def match(self, cls_logits: Tensor, bbox_preds: Tensor,
              gt_labels: Sequence[Tensor], gt_bboxes: Sequence[Tensor],
              img_names: Optional[Sequence[str]] = None,
              num_groups: int = 1) -> MatchIndices:
        """Match every decoder layer's predictions of every image.

        Args:
            cls_logits (Tensor): (num_layers, bs, num_queries, num_classes).
            bbox_preds (Tensor): (num_layers, bs, num_queries, 4), normalised
                cxcywh.
            gt_labels (Sequence[Tensor]): Per image, (num_gts_i,) long.
            gt_bboxes (Sequence[Tensor]): Per image, (num_gts_i, 4)
                normalised cxcywh.
            img_names (Sequence[str], optional): Per image, a name used in
                error messages. Defaults to None (the batch index).
            num_groups (int): Group DETR's K: the queries are K groups of
                ``num_queries / K`` consecutive rows, each matched on its
                own (``query`` still indexes all rows). Defaults to 1.

        Returns:
            MatchIndices: The matched pairs (K per ground truth and layer).

        Raises:
            ValueError: If a cost is NaN or infinite; the message names the
                image, the decoder layer (and group) and the cost term; or
                if ``num_queries`` is not a multiple of ``num_groups``.
        """
        num_layers, bs, num_queries, _ = cls_logits.shape
        if num_queries % num_groups:
            raise ValueError(f'{num_queries} queries do not split into '
                             f'{num_groups} groups')
        group_size = num_queries // num_groups
        sizes = [len(labels) for labels in gt_labels]
        device = cls_logits.device
        if sum(sizes) == 0:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return MatchIndices(empty, empty, empty, empty)
        with torch.autocast(device_type=device.type, enabled=False):
            terms = self.cost_terms(cls_logits.flatten(0, 2),
                                    bbox_preds.flatten(0, 2),
                                    torch.cat(list(gt_labels)),
                                    torch.cat(list(gt_bboxes)))
            cost = sum(terms.values())  # (layers * bs * nq, num_gts)
        # (layers, bs, K, N, num_gts): one host copy for every group.
        cost = cost.view(num_layers, bs, num_groups, group_size,
                         -1).cpu().numpy()
        offsets = np.cumsum([0] + sizes)
        pairs = []  # (layer, image, query, gt) arrays
        for layer in range(num_layers):
            for img in range(bs):
                for group in range(num_groups):
                    block = cost[layer, img, group, :,
                                 offsets[img]:offsets[img + 1]]
                    if not np.isfinite(block).all():
                        self._raise_non_finite(terms, (layer, img, group),
                                               offsets, cost.shape, img_names)
                    rows, cols = linear_sum_assignment(block)
                    pairs.append(np.stack([
                        np.full_like(rows, layer), np.full_like(rows, img),
                        rows + group * group_size, cols + offsets[img]]))
        indices = torch.from_numpy(np.concatenate(pairs, axis=1)).to(device)
        return MatchIndices(*indices)

    @staticmethod
    def _raise_non_finite(terms: dict, where: tuple,
                          offsets: np.ndarray, shape: tuple,
                          img_names: Optional[Sequence[str]]) -> None:
        """Raise the error for a non-finite cost block, naming its terms.

        ``where`` is (layer, image, group); ``shape`` the cost's
        (layers, bs, K, N, num_gts).
        """
        layer, img, group = where
        bad = []
        for name, term in terms.items():
            block = term.view(shape)[layer, img, group, :,
                                     offsets[img]:offsets[img + 1]]
            if not torch.isfinite(block).all():
                bad.append(name)
        name = img_names[img] if img_names else f'batch index {img}'
        in_group = f' (query group {group})' if shape[2] > 1 else ''
        raise ValueError(
            f'Non-finite Hungarian matching cost for image {name} in decoder '
            f'layer {layer}{in_group}: cost term(s) {bad} contain NaN or '
            'inf. The predictions have diverged (lower the learning rate or clip '
            'gradients) or a ground-truth box is degenerate.')
