# Conditional DETR R101, 50 epochs, lr drop after epoch 40
# (paper: 42.8 AP on COCO val2017).
_base_ = [
    '_base_/conditional_detr_r101.py', '_base_/coco_detection.py',
    '_base_/schedule_50e.py', '_base_/default_runtime.py'
]
