# conditional_detr_r101.py with DC5 (see conditional_detr_r50_dc5.py).
_base_ = './conditional_detr_r101.py'
model = dict(backbone=dict(type='CdetrDC5ResNet'))
