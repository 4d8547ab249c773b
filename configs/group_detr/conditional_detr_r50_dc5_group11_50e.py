# Group DETR (K = 11) on Conditional DETR DC5-R50, 50 epochs, lr drop after
# epoch 40, 8 GPUs x 1 image as the DC5 configs (Group DETR paper: 45.8 AP
# on COCO val2017; K = 1: 43.7).
_base_ = [
    '../_base_/conditional_detr_r50_dc5.py', '../_base_/coco_detection.py',
    '../_base_/schedule_50e.py', '../_base_/default_runtime.py'
]
model = dict(group_detr=11)
train_dataloader = dict(batch_size=1)
auto_scale_lr = dict(base_batch_size=8)
