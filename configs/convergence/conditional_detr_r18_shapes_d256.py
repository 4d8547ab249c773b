# Convergence benchmark (benchmarks/convergence.py, docs/convergence.md):
# our Conditional DETR. The DETR and mmdet-ConditionalDETR configs of the
# benchmark inherit everything from this file except the transformer, head,
# loss and matcher, so data, backbone, size, optimiser, schedule, batch and
# seed are identical by construction. The script sets the data and backbone
# paths, seed, epochs and the evaluation interval.
_base_ = ['../_base_/default_runtime.py']
custom_imports = dict(imports=['cdetr_mmdet'], allow_failed_imports=False)

data_root = 'data/convergence_shapes/'  # benchmarks/convergence.py makes it
img_size = 128
classes = ('ellipse', 'rectangle', 'triangle', 'cross')
metainfo = dict(classes=classes)
# d=256: mmdet's built-in ConditionalDETR hard-codes 128 sine features per
# axis, i.e. d=256, and the three models must share one size.
embed_dims = 256
num_queries = 30  # images hold at most 4 shapes
layer_cfg = dict(
    embed_dims=embed_dims, num_heads=8, feedforward_channels=1024,
    dropout=0.0)

model = dict(
    type='CdetrConditionalDETR',
    num_queries=num_queries,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    # Narrow ResNet-18, pre-trained on an image-level task by
    # benchmarks/pretrain_backbone.py (our ImageNet stand-in; to use this
    # config alone, write its --out to the checkpoint path below). Stem,
    # stage 1 and every BN frozen, as the paper's backbone (torchvision
    # FrozenBatchNorm2d, layer1 frozen).
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=32,  # stage widths 32, 64, 128
        num_stages=3,  # stage 4 unused
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        out_indices=(2, ),  # stride 16: 8x8 = 64 tokens for 128x128
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(
            type='Pretrained',
            checkpoint=data_root + 'pretrained_backbone.pth')),
    neck=dict(
        type='ChannelMapper',
        in_channels=[128],
        kernel_size=1,
        out_channels=embed_dims,
        act_cfg=None,
        norm_cfg=None,
        num_outs=1),
    positional_encoding=dict(num_feats=embed_dims // 2, normalize=True),
    encoder=dict(
        type='CdetrTransformerEncoder', num_layers=2, layer_cfg=layer_cfg),
    decoder=dict(
        type='CdetrTransformerDecoder', num_layers=2, layer_cfg=layer_cfg),
    bbox_head=dict(
        type='CdetrHead',
        num_classes=len(classes),
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
    test_cfg=dict(max_per_img=100))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric='bbox')
test_evaluator = val_evaluator

# The paper's optimiser: AdamW lr 1e-4, backbone 1e-5, weight decay 1e-4,
# grad-norm clip 0.1. Plus a short warm-up; no lr drop (a drop would move
# every curve at the same epoch and blur the comparison).
max_epochs = 30  # benchmarks/convergence.py --epochs overrides it
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100)
]
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(interval=1, max_keep_ckpts=1),
    visualization=dict(type='DetVisualizationHook', draw=False))
log_processor = dict(window_size=20)
