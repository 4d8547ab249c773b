# mmdet's DETR and ConditionalDETR recipes (their heads, losses and
# matchers, as in mmdet's own configs), for the twins of our models in
# configs/demo and configs/convergence. Plain variables, not `model`: a twin
# config merges them into the model it inherits, with its own sizes.
box_losses = dict(
    loss_bbox=dict(type='L1Loss', loss_weight=5.0),
    loss_iou=dict(type='GIoULoss', loss_weight=2.0))
box_costs = [
    dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
    dict(type='IoUCost', iou_mode='giou', weight=2.0)
]
ffn_cfg = dict(
    num_fcs=2, ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True))

detr_head = dict(
    type='DETRHead',
    loss_cls=dict(
        type='CrossEntropyLoss',
        bg_cls_weight=0.1,
        use_sigmoid=False,
        loss_weight=1.0,
        class_weight=1.0),
    **box_losses)
detr_assigner = dict(
    type='HungarianAssigner',
    match_costs=[dict(type='ClassificationCost', weight=1.)] + box_costs)

conditional_detr_head = dict(
    type='ConditionalDETRHead',
    loss_cls=dict(
        type='FocalLoss',
        use_sigmoid=True,
        gamma=2.0,
        alpha=0.25,
        loss_weight=2.0),
    **box_losses)
conditional_detr_assigner = dict(
    type='HungarianAssigner',
    match_costs=[dict(type='FocalLossCost', weight=2.0)] + box_costs)
