"""The Conditional DETR prediction head (registered in ``MODELS``)."""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.layers.transformer import MLP, inverse_sigmoid
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_xyxy_to_cxcywh
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule, bias_init_with_prob
from mmengine.structures import InstanceData
from torch import Tensor, nn


# The paper's losses, the one place that holds them (configs leave them
# out). mmdet's FocalLoss takes its pure-PyTorch path for the one-hot targets
# :meth:`CdetrHead.loss_by_feat` passes, on CPU and CUDA alike.
DEFAULT_LOSS_CLS = dict(type='FocalLoss', use_sigmoid=True, alpha=0.25,
                        gamma=2.0, loss_weight=2.0)
DEFAULT_LOSS_BBOX = dict(type='L1Loss', loss_weight=5.0)
DEFAULT_LOSS_IOU = dict(type='GIoULoss', loss_weight=2.0)


@MODELS.register_module()
class CdetrHead(BaseModule):
    """Classification and box branches shared by all decoder layers.

    ``box = sigmoid(MLP(f) + [inverse_sigmoid(s), 0, 0])`` (normalised
    cxcywh), sigmoid focal classification without a background class. Losses
    are taken on every decoder layer after one batched Hungarian matching
    (``aux_loss=False``: on the last layer only, the official
    ``--no_aux_loss``).

    The detector calls :meth:`forward`, :meth:`loss` and :meth:`predict`
    (mmdet's ``DetectionTransformer`` interface).

    Args:
        num_classes (int): Number of object classes (no background).
        embed_dims (int): Model width d. Defaults to 256.
        loss_cls (dict, optional): Classification loss config; any mmdet
            loss taking ``(logits, one_hot_targets, reduction_override=)``.
            Defaults to None: mmdet ``FocalLoss`` (sigmoid, alpha 0.25,
            gamma 2, weight 2).
        loss_bbox (dict, optional): Box L1 loss config. Defaults to None:
            mmdet ``L1Loss``, weight 5.
        loss_iou (dict, optional): Box GIoU loss config. Defaults to None:
            mmdet ``GIoULoss``, weight 2.
        train_cfg (dict, optional): ``dict(assigner=...)``, the matcher config
            (``CdetrHungarianMatcher``; the key is mmdet's convention), built
            into :attr:`matcher`. Needed for training only.
        test_cfg (dict, optional): ``max_per_img`` (default 100) and
            ``score_thr`` (default 0.0: keep all top-k).
        aux_loss (bool): Losses on every decoder layer (True, the paper's and
            the official default) or on the last one only (False, the
            official ``--no_aux_loss`` and Hugging Face's default). Defaults
            to True.
        num_groups (int): Group DETR's K, filled in by
            ``CdetrConditionalDETR`` from its ``group_detr``: in training
            mode the queries are K groups of N, each matched one-to-one
            against all ground truths of its image (every layer), and every
            loss is normalised by K times the box count (the official
            GroupDETR ``SetCriterion``); in eval mode one group. Defaults
            to 1.
        init_cfg (dict, optional): mmengine init config. Defaults to None.
    """

    def __init__(
            self,
            num_classes: int,
            embed_dims: int = 256,
            loss_cls: Optional[dict] = None,
            loss_bbox: Optional[dict] = None,
            loss_iou: Optional[dict] = None,
            train_cfg: Optional[dict] = None,
            test_cfg: Optional[dict] = None,
            aux_loss: bool = True,
            num_groups: int = 1,
            init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(f'CdetrHead: num_groups must be an int >= 1, '
                             f'got {num_groups!r}')
        self.num_groups = num_groups
        self.num_classes = num_classes
        self.aux_loss = aux_loss
        self.embed_dims = embed_dims
        self.loss_cls = MODELS.build(loss_cls or DEFAULT_LOSS_CLS)
        self.loss_bbox = MODELS.build(loss_bbox or DEFAULT_LOSS_BBOX)
        self.loss_iou = MODELS.build(loss_iou or DEFAULT_LOSS_IOU)
        self.matcher = (TASK_UTILS.build(train_cfg['assigner'])
                        if train_cfg else None)
        test_cfg = dict(test_cfg or {})
        self.max_per_img = test_cfg.pop('max_per_img', 100)
        self.score_thr = test_cfg.pop('score_thr', 0.0)
        if test_cfg:
            raise KeyError(f'Unknown test_cfg keys for CdetrHead: '
                           f'{sorted(test_cfg)}; expected max_per_img, '
                           'score_thr')
        self.fc_cls = nn.Linear(embed_dims, num_classes)
        self.fc_reg = MLP(embed_dims, embed_dims, 4, 3)

    def init_weights(self) -> None:
        """Focal-loss prior 0.01 on the class bias; zero last box layer."""
        super().init_weights()
        nn.init.constant_(self.fc_cls.bias, bias_init_with_prob(0.01))
        nn.init.constant_(self.fc_reg.layers[-1].weight, 0.)
        nn.init.constant_(self.fc_reg.layers[-1].bias, 0.)

    def forward(self, hidden_states: Tensor,
                references: Tensor) -> Tuple[Tensor, Tensor]:
        """Predict classes and boxes for every given decoder layer.

        Args:
            hidden_states (Tensor): (num_layers, bs, num_queries, d).
            references (Tensor): Reference points s, (bs, num_queries, 2).

        Returns:
            tuple[Tensor, Tensor]: Class logits
            (num_layers, bs, num_queries, num_classes) and boxes, normalised
            cxcywh, (num_layers, bs, num_queries, 4).
        """
        offset = F.pad(inverse_sigmoid(references), (0, 2))  # (bs, nq, 4)
        bbox_preds = (self.fc_reg(hidden_states) + offset).sigmoid()
        return self.fc_cls(hidden_states), bbox_preds

    def loss(self, hidden_states: Tensor, references: Tensor,
             batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """Forward and compute the losses of all decoder layers.

        Args:
            hidden_states (Tensor): (num_layers, bs, num_queries, d).
            references (Tensor): (bs, num_queries, 2).
            batch_data_samples (list[DetDataSample]): With ``gt_instances``
                (``bboxes`` xyxy in input pixels, ``labels``) and metainfo.

        Returns:
            dict[str, Tensor]: ``loss_cls``, ``loss_bbox``, ``loss_iou`` of the
            last layer and, with ``aux_loss``, ``d{i}.loss_*`` of the earlier
            ones.
        """
        if not self.aux_loss:
            hidden_states = hidden_states[-1:]  # (1, bs, num_queries, d)
        cls_logits, bbox_preds = self(hidden_states, references)
        return self.loss_by_feat(cls_logits, bbox_preds, batch_data_samples)

    def loss_by_feat(self, cls_logits: Tensor, bbox_preds: Tensor,
                     batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """Losses from head outputs; see :meth:`loss`.

        Args:
            cls_logits (Tensor): (num_layers, bs, num_queries, num_classes).
            bbox_preds (Tensor): (num_layers, bs, num_queries, 4).
            batch_data_samples (list[DetDataSample]): Targets and metainfo.

        Returns:
            dict[str, Tensor]: The losses, see :meth:`loss`.
        """
        if self.matcher is None:
            raise RuntimeError('CdetrHead has no matcher: set '
                               'model.train_cfg.assigner to train it')
        # Losses in fp32, also under autocast (a no-op for fp32 inputs).
        cls_logits, bbox_preds = cls_logits.float(), bbox_preds.float()
        gt_labels, gt_bboxes = [], []
        for sample in batch_data_samples:
            img_h, img_w = sample.metainfo['img_shape']
            factor = torch.tensor([img_w, img_h, img_w, img_h],
                                  dtype=torch.float32, device=bbox_preds.device)
            gt_labels.append(sample.gt_instances.labels)
            gt_bboxes.append(  # (num_gts_i, 4) normalised cxcywh
                bbox_xyxy_to_cxcywh(sample.gt_instances.bboxes.float()) / factor)
        # Group DETR: K groups in training (each matched to every GT), 1 in
        # eval, as the official SetCriterion.
        groups = self.num_groups if self.training else 1
        match = self.matcher.match(
            cls_logits, bbox_preds, gt_labels, gt_bboxes,
            [s.metainfo.get('img_path', str(i))
             for i, s in enumerate(batch_data_samples)], num_groups=groups)
        num_layers = cls_logits.shape[0]
        # Normalise by the mean number of boxes over processes (official),
        # times K: each group has its own match of every box.
        num_boxes = reduce_mean(cls_logits.new_tensor(float(
            sum(len(labels) for labels in gt_labels) * groups))).clamp(min=1)

        all_labels = torch.cat(gt_labels)  # (num_gts,)
        all_gt_bboxes = torch.cat(gt_bboxes)  # (num_gts, 4)
        targets = torch.zeros_like(cls_logits)  # (layers, bs, nq, classes)
        targets[match.layer, match.image, match.query,
                all_labels[match.gt]] = 1.
        loss_cls = self.loss_cls(cls_logits, targets,
                                 reduction_override='none').sum(
                                     (1, 2, 3)) / num_boxes  # (num_layers,)

        # Touch the box branch even without targets, so DDP sees it used.
        unused = bbox_preds.sum() * 0
        loss_bbox = loss_iou = bbox_preds.new_zeros(num_layers) + unused
        if match.gt.numel():
            matched_preds = bbox_preds[match.layer, match.image, match.query]
            matched_gts = all_gt_bboxes[match.gt]  # (num_pairs, 4) cxcywh
            l1 = self.loss_bbox(matched_preds, matched_gts,
                                reduction_override='none').sum(-1)
            giou = self.loss_iou(bbox_cxcywh_to_xyxy(matched_preds),
                                 bbox_cxcywh_to_xyxy(matched_gts),
                                 reduction_override='none')
            # Per-layer sums of the per-pair losses: (num_layers,)
            loss_bbox = loss_bbox.index_add(0, match.layer, l1) / num_boxes
            loss_iou = loss_iou.index_add(0, match.layer, giou) / num_boxes

        losses = {}
        for i in range(num_layers):
            prefix = '' if i == num_layers - 1 else f'd{i}.'
            losses[f'{prefix}loss_cls'] = loss_cls[i]
            losses[f'{prefix}loss_bbox'] = loss_bbox[i]
            losses[f'{prefix}loss_iou'] = loss_iou[i]
        return losses

    def predict(self, hidden_states: Tensor, references: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> List[InstanceData]:
        """Detections from the last decoder layer.

        Args:
            hidden_states (Tensor): (num_layers, bs, num_queries, d).
            references (Tensor): (bs, num_queries, 2).
            batch_data_samples (list[DetDataSample]): With metainfo
                ``img_shape`` and ``scale_factor``.
            rescale (bool): Map boxes to the original image. Defaults to True.

        Returns:
            list[InstanceData]: Per image ``bboxes`` (k, 4) xyxy, ``scores``
            (k,), ``labels`` (k,).
        """
        cls_logits, bbox_preds = self(hidden_states[-1:], references)
        return self.predict_by_feat(cls_logits[0], bbox_preds[0],
                                    [s.metainfo for s in batch_data_samples],
                                    rescale)

    def topk_detections(self, cls_logits: Tensor, bbox_preds: Tensor
                        ) -> Tuple[Tensor, Tensor, Tensor]:
        """Top-k (``max_per_img``) over all (query, class) sigmoid scores.

        Shared by :meth:`predict_by_feat` and the ONNX export
        (``cdetr_mmdet.deploy``), so both run the same post-processing.

        Args:
            cls_logits (Tensor): (bs, num_queries, num_classes).
            bbox_preds (Tensor): (bs, num_queries, 4) normalised cxcywh.

        Returns:
            tuple[Tensor, Tensor, Tensor]: ``scores`` (bs, k), ``labels``
            (bs, k) and ``boxes`` (bs, k, 4) normalised xyxy, best first.
        """
        bs, num_queries, num_classes = cls_logits.shape
        k = min(self.max_per_img, num_queries * num_classes)
        scores, index = cls_logits.sigmoid().flatten(1).topk(k)  # (bs, k)
        labels = index % num_classes
        query = torch.div(index, num_classes, rounding_mode='floor')
        boxes = bbox_cxcywh_to_xyxy(  # (bs, k, 4)
            bbox_preds.gather(1, query[..., None].expand(-1, -1, 4)))
        return scores, labels, boxes

    def predict_by_feat(self, cls_logits: Tensor, bbox_preds: Tensor,
                        batch_img_metas: List[dict],
                        rescale: bool = True) -> List[InstanceData]:
        """Top-k over all (query, class) scores, as the official post-process.

        Boxes are scaled by the unpadded input size and, with ``rescale``,
        divided by ``scale_factor``; like the official code they are not
        clipped to the image.

        Args:
            cls_logits (Tensor): (bs, num_queries, num_classes).
            bbox_preds (Tensor): (bs, num_queries, 4) normalised cxcywh.
            batch_img_metas (list[dict]): ``img_shape``, ``scale_factor``.
            rescale (bool): Map boxes to the original image. Defaults to True.

        Returns:
            list[InstanceData]: See :meth:`predict`; scores and boxes in
            float32 under bf16 autocast too.
        """
        # Under bf16 autocast the head's outputs are bfloat16: the
        # post-process runs in float32, so results are float32 for mmdet's
        # CocoMetric and NumPy (which have no bfloat16) and boxes keep
        # sub-pixel precision when scaled to the image (no-op in fp32).
        cls_logits, bbox_preds = cls_logits.float(), bbox_preds.float()
        scores, labels, boxes = self.topk_detections(cls_logits, bbox_preds)
        results = []
        for i, meta in enumerate(batch_img_metas):
            img_h, img_w = meta['img_shape']
            img_boxes = boxes[i] * boxes.new_tensor([img_w, img_h, img_w,
                                                     img_h])
            if rescale:
                img_boxes = img_boxes / img_boxes.new_tensor(
                    meta['scale_factor']).repeat(2)
            keep = scores[i] > self.score_thr
            results.append(InstanceData(bboxes=img_boxes[keep],
                                        scores=scores[i][keep],
                                        labels=labels[i][keep]))
        return results
