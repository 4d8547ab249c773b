# mmdet's built-in DETR with the same backbone, size, data and schedule as
# conditional_detr_r18_shapes.py: the twin for a convergence comparison.
_base_ = ['conditional_detr_r18_shapes.py']

embed_dims = 128
attn_cfg = dict(
    embed_dims=embed_dims, num_heads=8, dropout=0.0, batch_first=True)
ffn_cfg = dict(
    embed_dims=embed_dims,
    feedforward_channels=512,
    num_fcs=2,
    ffn_drop=0.0,
    act_cfg=dict(type='ReLU', inplace=True))
model = dict(
    type='DETR',
    encoder=dict(  # DetrTransformerEncoder
        _delete_=True,
        num_layers=2,
        layer_cfg=dict(self_attn_cfg=attn_cfg, ffn_cfg=ffn_cfg)),
    decoder=dict(  # DetrTransformerDecoder
        _delete_=True,
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=attn_cfg, cross_attn_cfg=attn_cfg,
            ffn_cfg=ffn_cfg),
        return_intermediate=True),
    bbox_head=dict(
        _delete_=True,
        type='DETRHead',
        num_classes=4,
        embed_dims=embed_dims,
        loss_cls=dict(
            type='CrossEntropyLoss',
            bg_cls_weight=0.1,
            use_sigmoid=False,
            loss_weight=1.0,
            class_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(
        _delete_=True,
        assigner=dict(
            type='HungarianAssigner',
            match_costs=[
                dict(type='ClassificationCost', weight=1.),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0)
            ])),
    # DETRHead takes the top-k queries: k must not exceed num_queries (20).
    test_cfg=dict(_delete_=True, max_per_img=20))
