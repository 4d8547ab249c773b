# Conditional DETR R50, 75 epochs, lr drop after epoch 60
# (paper: 42.1 AP on COCO val2017).
_base_ = [
    '_base_/conditional_detr_r50.py', '_base_/coco_detection.py',
    '_base_/schedule_75e.py', '_base_/default_runtime.py'
]
