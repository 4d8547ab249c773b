# The 108-epoch schedule of conditional_detr_r50_dc5_50e.py. We could not find
# the lr-drop epoch of the 108-epoch runs stated in the paper or the official
# repository, so the drop is at epoch 80 (lr x0.1).
_base_ = './conditional_detr_r50_dc5_50e.py'
max_epochs = 108
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[80],
        gamma=0.1)
]
