# Group DETR (K = 11 query groups in training, one at inference) on
# Conditional DETR R50, 12 epochs, lr drop after epoch 11, 8 GPUs x 2 images:
# the official GroupDETR branch's scripts/conddetr_r50_epoch12_groupdetr11.sh
# (Group DETR paper: 37.6 AP on COCO val2017; K = 1: 32.6).
_base_ = [
    '../_base_/conditional_detr_r50.py', '../_base_/coco_detection.py',
    '../_base_/schedule_12e.py', '../_base_/default_runtime.py'
]
model = dict(group_detr=11)
