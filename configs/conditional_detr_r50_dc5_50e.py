# Conditional DETR DC5-R50, 50 epochs (paper: 43.8 AP). DC5: stride 1 and
# dilation 2 in the last ResNet stage (torchvision's
# replace_stride_with_dilation=[False, False, True], whose first block of
# that stage keeps dilation 1); 8 GPUs x 1 image.
_base_ = [
    '_base_/conditional_detr_r50.py', '_base_/coco_detection.py',
    '_base_/schedule_50e.py', '_base_/default_runtime.py'
]
model = dict(backbone=dict(type='CdetrDC5ResNet'))
train_dataloader = dict(batch_size=1)
auto_scale_lr = dict(base_batch_size=8)
