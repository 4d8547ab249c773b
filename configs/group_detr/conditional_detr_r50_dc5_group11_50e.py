# Group DETR (K = 11) on Conditional DETR DC5-R50, 50 epochs, lr drop after
# epoch 40, 8 GPUs x 1 image as the DC5 configs (Group DETR paper: 45.8 AP
# on COCO val2017; K = 1: 43.7): the paper's DC5 config with 11 query groups
# in training.
_base_ = '../conditional_detr_r50_dc5_50e.py'
model = dict(group_detr=11)
