# conditional_detr_r50.py with a DC5 ResNet-101 backbone (DC5: see
# conditional_detr_r50_dc5.py).
_base_ = './conditional_detr_r50.py'
model = dict(
    backbone=dict(
        type='CdetrDC5ResNet', depth=101,
        init_cfg=dict(checkpoint='torchvision://resnet101')))
