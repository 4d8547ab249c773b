# Convergence benchmark: mmdet's built-in ConditionalDETR (d must be 256).
# Everything but the transformer, head, loss and matcher comes from our
# Conditional DETR config.
_base_ = ['conditional_detr_r18_shapes_d256.py']

ffn_cfg = dict(
    embed_dims=256,
    feedforward_channels=1024,
    num_fcs=2,
    ffn_drop=0.0,
    act_cfg=dict(type='ReLU', inplace=True))
model = dict(
    type='ConditionalDETR',
    encoder=dict(  # DetrTransformerEncoder
        _delete_=True,
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(
                embed_dims=256, num_heads=8, dropout=0.0, batch_first=True),
            ffn_cfg=ffn_cfg)),
    decoder=dict(  # ConditionalDetrTransformerDecoder
        _delete_=True,
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(
                embed_dims=256, num_heads=8, attn_drop=0.0, cross_attn=False),
            cross_attn_cfg=dict(
                embed_dims=256, num_heads=8, attn_drop=0.0, cross_attn=True),
            ffn_cfg=ffn_cfg),
        return_intermediate=True),
    bbox_head=dict(
        _delete_=True,
        type='ConditionalDETRHead',
        num_classes=4,
        embed_dims=256,
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=2.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(
        _delete_=True,
        assigner=dict(
            type='HungarianAssigner',
            match_costs=[
                dict(type='FocalLossCost', weight=2.0),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0)
            ])),
    test_cfg=dict(_delete_=True, max_per_img=100))
