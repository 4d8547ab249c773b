# Conditional DETR R101, 108 epochs, lr drop after epoch 80
# (paper: 44.5 AP on COCO val2017).
_base_ = [
    '_base_/conditional_detr_r101.py', '_base_/coco_detection.py',
    '_base_/schedule_108e.py', '_base_/default_runtime.py'
]
