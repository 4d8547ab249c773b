# Conditional DETR, narrow ResNet-18 from scratch, on the synthetic shapes:
# the demo's detector (bash tools/run_demo.sh). The R50 model with smaller
# sizes; learns in about 10 minutes on 2 CPU cores. Recipe: docs/demo.md.
_base_ = [
    '../_base_/conditional_detr_r50.py', '../_base_/shapes_detection.py',
    '../_base_/default_runtime.py'
]

embed_dims = 128
layer_cfg = dict(
    embed_dims=embed_dims, num_heads=8, feedforward_channels=512,
    dropout=0.0)
model = dict(
    num_queries=20,  # images hold at most 3 shapes
    backbone=dict(  # from scratch: no pretrained weights, BN trained
        depth=18,
        base_channels=16,  # stage widths 16, 32, 64
        num_stages=3,  # the last stage is not used
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        out_indices=(2, ),  # stride 16: 8x8 tokens for a 128x128 image
        frozen_stages=-1,
        norm_cfg=dict(requires_grad=True),
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[64], out_channels=embed_dims),
    positional_encoding=dict(num_feats=embed_dims // 2),
    encoder=dict(num_layers=2, layer_cfg=layer_cfg),
    decoder=dict(num_layers=2, layer_cfg=layer_cfg),
    bbox_head=dict(num_classes=4, embed_dims=embed_dims))

train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    batch_sampler=dict(type='AspectRatioBatchSampler'))
val_dataloader = dict(num_workers=1, persistent_workers=True)
test_dataloader = val_dataloader
val_evaluator = dict(classwise=True)  # per-class AP table
test_evaluator = val_evaluator

# From scratch on small data: lr 5e-4 everywhere (backbone included), a
# warm-up, clip 1.0 and one late lr drop.
max_epochs = 30
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=200),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs,
         milestones=[25], gamma=0.1)
]
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=10)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(interval=10, max_keep_ckpts=1))
log_processor = dict(window_size=20)
