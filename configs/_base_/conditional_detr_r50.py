# Conditional DETR, ResNet-50, 300 queries: the official architecture.
# One size for the encoder and the decoder layers (the official `--dim_feedforward`,
# `--nheads`, `--dropout` set both).
layer_cfg = dict(
    embed_dims=256, num_heads=8, feedforward_channels=2048, dropout=0.1)
model = dict(
    type='CdetrConditionalDETR',
    num_queries=300,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(3, ),
        frozen_stages=1,
        # Frozen BN (as the official FrozenBatchNorm2d) that saves no
        # activation for backward: 235 MiB less per R50 step at
        # 512x512, batch 2; same outputs (docs/benchmarks.md).
        norm_cfg=dict(type='CdetrFrozenBatchNorm2d', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(  # the official 1x1 input projection to d=256
        type='ChannelMapper',
        in_channels=[2048],
        kernel_size=1,
        out_channels=256,
        act_cfg=None,
        norm_cfg=None,
        num_outs=1),
    positional_encoding=dict(num_feats=128, normalize=True),
    encoder=dict(
        type='CdetrTransformerEncoder', num_layers=6, layer_cfg=layer_cfg),
    decoder=dict(
        type='CdetrTransformerDecoder', num_layers=6, layer_cfg=layer_cfg),
    # Losses: CdetrHead's defaults, the paper's (focal 2, L1 5, GIoU 2).
    bbox_head=dict(type='CdetrHead', num_classes=80, embed_dims=256),
    train_cfg=dict(
        assigner=dict(
            type='CdetrHungarianMatcher',
            cost_class=2.0,
            cost_bbox=5.0,
            cost_giou=2.0)),
    test_cfg=dict(max_per_img=100, score_thr=0.0))
