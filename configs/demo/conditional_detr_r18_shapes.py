# Conditional DETR, narrow ResNet-18 from scratch, on the synthetic shapes:
# the demo's detector (bash tools/run_demo.sh). Recipe: docs/demo.md.
_base_ = ['_base_/shapes_r18.py']
custom_imports = dict(imports=['cdetr_mmdet'], allow_failed_imports=False)

embed_dims = 128
layer_cfg = dict(
    embed_dims=embed_dims, num_heads=8, feedforward_channels=512,
    dropout=0.0)
model = dict(
    type='CdetrConditionalDETR',
    encoder=dict(
        type='CdetrTransformerEncoder', num_layers=2, layer_cfg=layer_cfg),
    decoder=dict(
        type='CdetrTransformerDecoder', num_layers=2, layer_cfg=layer_cfg),
    bbox_head=dict(
        type='CdetrHead',
        num_classes=4,
        embed_dims=embed_dims,
        loss_cls=dict(
            type='CdetrFocalLoss', alpha=0.25, gamma=2.0, loss_weight=2.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(
        assigner=dict(
            type='CdetrHungarianMatcher',
            cost_class=2.0,
            cost_bbox=5.0,
            cost_giou=2.0)),
    test_cfg=dict(max_per_img=100, score_thr=0.0))
