# Shared by the demo configs: the synthetic shapes data (128x128, 4 classes),
# a narrow ResNet-18 trained from scratch, the schedule and the runtime.
# Sized to learn in about 10 minutes on 2 CPU cores; see docs/demo.md.
_base_ = ['../../_base_/default_runtime.py']

data_root = 'data/shapes/'  # tools/demo.py generates it there
img_size = 128
classes = ('ellipse', 'rectangle', 'triangle', 'cross')
metainfo = dict(classes=classes)

# Everything except the transformer and the head, which differ per detector.
model = dict(
    num_queries=20,  # images hold at most 3 shapes
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(  # from scratch: no pretrained weights, BN trained
        type='ResNet',
        depth=18,
        base_channels=16,  # stage widths 16, 32, 64
        num_stages=3,  # the last stage is not used
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        out_indices=(2, ),  # stride 16: 8x8 tokens for a 128x128 image
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch'),
    neck=dict(
        type='ChannelMapper',
        in_channels=[64],
        kernel_size=1,
        out_channels=128,
        act_cfg=None,
        norm_cfg=None,
        num_outs=1),
    positional_encoding=dict(num_feats=64, normalize=True))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # Any image (e.g. tools/infer.py's) is brought to the training scale.
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
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
    num_workers=1,
    persistent_workers=True,
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
    metric='bbox',
    classwise=True)  # per-class AP table
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
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(interval=10, max_keep_ckpts=1))
log_processor = dict(window_size=20)
