# Conditional DETR DC5-R50, 108 epochs, lr drop after epoch 80
# (paper: 45.1 AP on COCO val2017); 8 GPUs x 1 image.
_base_ = [
    '_base_/conditional_detr_r50_dc5.py', '_base_/coco_detection.py',
    '_base_/schedule_108e.py', '_base_/default_runtime.py'
]
train_dataloader = dict(batch_size=1)
auto_scale_lr = dict(base_batch_size=8)
