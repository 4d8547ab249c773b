# Conditional DETR DC5-R101, 50 epochs (paper: 45.0 AP). DC5 as in
# conditional_detr_r50_dc5_50e.py; 8 GPUs x 1 image.
_base_ = [
    '_base_/conditional_detr_r50.py', '_base_/coco_detection.py',
    '_base_/schedule_50e.py', '_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        depth=101,
        type='CdetrDC5ResNet',
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
train_dataloader = dict(batch_size=1)
auto_scale_lr = dict(base_batch_size=8)
