# Group DETR (K = 11) on Conditional DETR R50, 50 epochs, lr drop after
# epoch 40, 8 GPUs x 2 images (Group DETR paper: 43.4 AP on COCO val2017;
# K = 1: 40.9): the paper config with 11 query groups in training.
_base_ = '../conditional_detr_r50_50e.py'
model = dict(group_detr=11)
