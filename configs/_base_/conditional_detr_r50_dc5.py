# conditional_detr_r50.py with DC5: stride 1 and dilation 2 in the last
# ResNet stage (CdetrDC5ResNet, as torchvision's
# replace_stride_with_dilation=[False, False, True]).
_base_ = './conditional_detr_r50.py'
model = dict(backbone=dict(type='CdetrDC5ResNet'))
