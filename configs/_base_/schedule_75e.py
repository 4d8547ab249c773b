# schedule_50e.py over 75 epochs, lr x0.1 after epoch 60 (paper, section 4.1).
_base_ = './schedule_50e.py'
max_epochs = 75
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[60], gamma=0.1)
]
