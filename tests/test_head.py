"""Box decoding, losses and post-processing of the head."""
import mmdet.models.losses.focal_loss as mmdet_focal
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_xyxy_to_cxcywh
from mmengine.structures import InstanceData


def official_sigmoid_focal_loss(inputs, targets, num_boxes, alpha=0.25,
                                gamma=2):
    """Atten4Vis/ConditionalDETR models/segmentation.py, verbatim."""
    prob = inputs.sigmoid()
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets,
                                                 reduction='none')
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce_loss * ((1 - p_t)**gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss.mean(1).sum() / num_boxes


def build_head(num_classes=3, d=32, **test_cfg):
    head = MODELS.build(dict(
        type='CdetrHead', num_classes=num_classes, embed_dims=d,
        train_cfg=dict(assigner=dict(type='CdetrHungarianMatcher')),
        test_cfg=test_cfg or None))
    head.init_weights()
    return head


def sample(h, w, boxes=(), labels=(), scale=(1., 1.)):
    s = DetDataSample(metainfo=dict(img_shape=(h, w), scale_factor=scale,
                                    img_path='x.png'))
    s.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    return s


def test_init_prior_and_zero_box_layer_put_boxes_on_references():
    head = build_head()
    torch.testing.assert_close(
        head.fc_cls.bias, torch.full((3, ), -4.59511985013459))
    refs = torch.rand(2, 4, 2)
    _, boxes = head(torch.randn(2, 2, 4, 32), refs)
    torch.testing.assert_close(boxes[..., :2], refs.expand(2, -1, -1, -1))
    torch.testing.assert_close(boxes[..., 2:], torch.full_like(
        boxes[..., 2:], .5))


def test_box_decoding_formula():
    head = build_head()
    torch.nn.init.normal_(head.fc_reg.layers[-1].weight)
    hidden, refs = torch.randn(2, 1, 4, 32), torch.rand(1, 4, 2)
    _, boxes = head(hidden, refs)
    raw = head.fc_reg(hidden)
    raw[..., :2] += inverse_sigmoid(refs)
    torch.testing.assert_close(boxes, raw.sigmoid())


def test_image_without_objects_has_class_loss_only():
    head = build_head()
    hidden = torch.randn(2, 1, 4, 32)
    losses = head.loss(hidden, torch.rand(1, 4, 2), [sample(40, 60)])
    logits = head.fc_cls(hidden)  # every query a negative; num_boxes 1
    for key, layer in (('d0.loss_cls', 0), ('loss_cls', 1)):
        torch.testing.assert_close(losses[key], 2 * 4 * (
            official_sigmoid_focal_loss(logits[layer],
                                        torch.zeros_like(logits[layer]), 1)))
    for key in ('loss_bbox', 'loss_iou', 'd0.loss_bbox', 'd0.loss_iou'):
        assert losses[key] == 0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())


def test_losses_on_hand_made_match():
    """One query, one box: the losses equal their formulas."""
    head = build_head(num_classes=2)
    logits = torch.tensor([[[[0.3, -0.2]]]])  # (1, 1, 1, 2)
    boxes = torch.tensor([[[[.5, .5, .2, .4]]]])
    gt = sample(100, 200, [[80., 30., 120., 70.]], [1])  # cxcywh .5 .5 .2 .4
    losses = head.loss_by_feat(logits, boxes, [gt])
    p = torch.tensor([.3, -.2]).sigmoid()  # query 0 matched to class 1
    expected_cls = 2 * -(.75 * p[0]**2 * (1 - p[0]).log() +
                         .25 * (1 - p[1])**2 * p[1].log())
    torch.testing.assert_close(losses['loss_cls'], expected_cls)
    torch.testing.assert_close(losses['loss_bbox'], torch.tensor(0.))
    torch.testing.assert_close(losses['loss_iou'], torch.tensor(0.),
                               atol=1e-5, rtol=0)
    shifted = boxes + torch.tensor([.1, 0., 0., 0.])
    losses = head.loss_by_feat(logits, shifted, [gt])
    torch.testing.assert_close(losses['loss_bbox'], torch.tensor(5 * .1))


def test_class_loss_equals_official_formula_on_every_layer(monkeypatch):
    """mmdet's FocalLoss on our one-hot targets is the official loss.

    Official: ``sigmoid_focal_loss(logits, one_hot, num_boxes) * num_queries``
    times the weight 2, per decoder layer. mmcv's compiled kernel is made to
    fail: the one-hot targets must take mmdet's pure-PyTorch path.
    """
    def compiled_kernel(*args, **kwargs):
        raise AssertionError('mmcv sigmoid_focal_loss kernel called')

    monkeypatch.setattr(mmdet_focal, 'sigmoid_focal_loss', compiled_kernel)
    torch.manual_seed(0)
    head = build_head(num_classes=5)
    layers, bs, nq = 3, 2, 7
    logits = torch.randn(layers, bs, nq, 5)
    boxes = torch.rand(layers, bs, nq, 4) * .5 + .25
    gts = [sample(64, 96, [[10., 5., 50., 40.], [30., 20., 90., 60.]],
                  [4, 1]),
           sample(64, 96, [[0., 0., 20., 64.]], [2])]
    losses = head.loss_by_feat(logits, boxes, gts)
    factor = torch.tensor([96., 64., 96., 64.])
    match = head.matcher.match(
        logits, boxes, [g.gt_instances.labels for g in gts],
        [bbox_xyxy_to_cxcywh(g.gt_instances.bboxes) / factor for g in gts])
    labels = torch.tensor([4, 1, 2])
    for i in range(layers):
        one_hot = torch.zeros(bs, nq, 5)
        pick = match.layer == i
        one_hot[match.image[pick], match.query[pick],
                labels[match.gt[pick]]] = 1.
        expected = 2 * official_sigmoid_focal_loss(logits[i], one_hot,
                                                   num_boxes=3) * nq
        key = 'loss_cls' if i == layers - 1 else f'd{i}.loss_cls'
        torch.testing.assert_close(losses[key], expected)


def test_topk_over_queries_and_classes_and_rescale():
    head = build_head(num_classes=2, max_per_img=3)
    logits = torch.full((1, 4, 2), -10.)
    logits[0, 2, 1], logits[0, 0, 0], logits[0, 2, 0] = 5., 4., 3.
    boxes = torch.tensor([[[.5, .5, .2, .2]] * 4])
    boxes[0, 2] = torch.tensor([.25, .5, .5, 1.])
    meta = dict(img_shape=(100, 200), scale_factor=(2., 4.))
    result = head.predict_by_feat(logits, boxes, [meta])[0]
    assert result.labels.tolist() == [1, 0, 0]
    torch.testing.assert_close(result.scores,
                               torch.tensor([5., 4., 3.]).sigmoid())
    # Query 2: cxcywh (.25, .5, .5, 1) on 200x100 -> (0, 0, 100, 100), then
    # divided by the scale factor (w 2, h 4).
    torch.testing.assert_close(result.bboxes[0],
                               torch.tensor([0., 0., 50., 25.]))


def test_more_detections_requested_than_exist_and_score_thr():
    head = build_head(num_classes=2, max_per_img=100, score_thr=0.5)
    logits = torch.tensor([[[3., -3.], [-3., -3.], [-3., 2.]]])
    result = head.predict_by_feat(logits, torch.rand(1, 3, 4),
                                  [dict(img_shape=(10, 10),
                                        scale_factor=(1., 1.))])[0]
    assert len(result) == 2 and (result.scores > .5).all()


def test_unknown_test_cfg_key_is_rejected():
    with pytest.raises(KeyError, match='max_per_imgs'):
        build_head(max_per_imgs=10)


def test_without_aux_loss_only_the_last_layer_is_trained():
    head = build_head()
    head.fc_reg.layers[-1].weight.data.normal_(0, 0.1)
    hidden, refs = torch.randn(3, 2, 5, 32), torch.rand(2, 5, 2)
    gts = [sample(40, 60, [[2, 3, 30, 20], [10, 10, 50, 38]], [0, 2]),
           sample(40, 60, [[5, 5, 20, 30]], [1])]
    full = head.loss(hidden, refs, gts)
    head.aux_loss = False
    last = head.loss(hidden, refs, gts)
    assert sorted(last) == ['loss_bbox', 'loss_cls', 'loss_iou']
    # Matching is per layer: the last layer's losses are unchanged.
    for key, value in last.items():
        torch.testing.assert_close(value, full[key])
    hidden.requires_grad_(True)
    sum(head.loss(hidden, refs, gts).values()).backward()
    assert hidden.grad[:-1].abs().sum() == 0
    assert hidden.grad[-1].abs().sum() > 0
