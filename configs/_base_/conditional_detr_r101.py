# conditional_detr_r50.py with a ResNet-101 backbone.
_base_ = './conditional_detr_r50.py'
model = dict(
    backbone=dict(
        depth=101, init_cfg=dict(checkpoint='torchvision://resnet101')))
