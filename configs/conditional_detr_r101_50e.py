# Conditional DETR R101, 50 epochs (paper: 42.8 AP).
_base_ = './conditional_detr_r50_50e.py'
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
