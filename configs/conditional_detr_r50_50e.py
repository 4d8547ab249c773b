# Conditional DETR R50, 50 epochs, lr drop after epoch 40
# (paper: 40.9 AP on COCO val2017).
_base_ = [
    '_base_/conditional_detr_r50.py', '_base_/coco_detection.py',
    '_base_/schedule_50e.py', '_base_/default_runtime.py'
]
