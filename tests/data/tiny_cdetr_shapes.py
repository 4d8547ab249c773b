# A tiny Conditional DETR on generated shapes, for integration tests.
# Tests set the data paths (``set_data_root`` in tests/test_integration.py).
_base_ = ['../../configs/_base_/default_runtime.py']

classes = ('ellipse', 'rectangle', 'triangle', 'cross')
embed_dims = 32
model = dict(
    type='CdetrConditionalDETR',
    num_queries=10,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=16,
        num_stages=4,
        out_indices=(3, ),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch'),
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
        type='CdetrTransformerEncoder',
        num_layers=1,
        layer_cfg=dict(
            embed_dims=embed_dims, num_heads=4, feedforward_channels=64,
            dropout=0.0)),
    decoder=dict(
        type='CdetrTransformerDecoder',
        num_layers=2,
        layer_cfg=dict(
            embed_dims=embed_dims, num_heads=4, feedforward_channels=64,
            dropout=0.0)),
    bbox_head=dict(
        type='CdetrHead', num_classes=len(classes), embed_dims=embed_dims),
    train_cfg=dict(assigner=dict(type='CdetrHungarianMatcher')),
    test_cfg=dict(max_per_img=20))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='CdetrClampBoxes'),  # as the official code: clamp to the image
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(96, 96), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='CdetrCocoDataset',
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CdetrCocoDataset',
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CdetrCocoMetric', metric='bbox')
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40, val_interval=40)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = []
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5),
    checkpoint=dict(interval=20, by_epoch=False,
                    max_keep_ckpts=-1))
log_processor = dict(by_epoch=False)
