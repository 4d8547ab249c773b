# Convergence benchmark (benchmarks/convergence.py, docs/convergence.md):
# our Conditional DETR, the R50 model with smaller sizes. The DETR and
# mmdet-ConditionalDETR configs of the benchmark inherit everything from this
# file except the transformer, head, loss and matcher, so data, backbone,
# size, optimiser, schedule, batch and seed are identical by construction.
# The script sets the data and backbone paths, seed, epochs and the
# evaluation interval.
_base_ = [
    '../_base_/conditional_detr_r50.py', '../_base_/shapes_detection.py',
    '../_base_/default_runtime.py'
]

data_root = 'data/convergence_shapes/'  # benchmarks/convergence.py makes it
# d=256: mmdet's built-in ConditionalDETR hard-codes 128 sine features per
# axis, i.e. d=256, and the three models must share one size.
embed_dims = 256
layer_cfg = dict(
    embed_dims=embed_dims, num_heads=8, feedforward_channels=1024,
    dropout=0.0)
model = dict(
    num_queries=30,  # images hold at most 4 shapes
    # Narrow ResNet-18, pre-trained on an image-level task by
    # benchmarks/pretrain_backbone.py (our ImageNet stand-in; to use this
    # config alone, write its --out to the checkpoint path below). Stem,
    # stage 1 and every BN frozen, as the paper's backbone (torchvision
    # FrozenBatchNorm2d, layer1 frozen): the R50 base's settings.
    backbone=dict(
        depth=18,
        base_channels=32,  # stage widths 32, 64, 128
        num_stages=3,  # stage 4 unused
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        out_indices=(2, ),  # stride 16: 8x8 = 64 tokens for 128x128
        init_cfg=dict(checkpoint=data_root + 'pretrained_backbone.pth')),
    neck=dict(in_channels=[128], out_channels=embed_dims),
    positional_encoding=dict(num_feats=embed_dims // 2),
    encoder=dict(num_layers=2, layer_cfg=layer_cfg),
    decoder=dict(num_layers=2, layer_cfg=layer_cfg),
    bbox_head=dict(num_classes=4, embed_dims=embed_dims),
    test_cfg=dict(_delete_=True, max_per_img=100))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# The paper's optimiser (schedule_50e.py's): AdamW lr 1e-4, backbone 1e-5,
# weight decay 1e-4, grad-norm clip 0.1. Plus a short warm-up; no lr drop (a
# drop would move every curve at the same epoch and blur the comparison).
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

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(interval=1, max_keep_ckpts=1),
    visualization=dict(type='DetVisualizationHook', draw=False))
log_processor = dict(window_size=20)
