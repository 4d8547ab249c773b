# Conditional DETR DC5-R101, 75 epochs, lr drop after epoch 60
# (paper: 45.6 AP on COCO val2017); 8 GPUs x 1 image.
_base_ = [
    '_base_/conditional_detr_r101_dc5.py', '_base_/coco_detection.py',
    '_base_/schedule_75e.py', '_base_/default_runtime.py'
]
train_dataloader = dict(batch_size=1)
auto_scale_lr = dict(base_batch_size=8)
