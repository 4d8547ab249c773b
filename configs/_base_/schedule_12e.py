# schedule_50e.py over 12 epochs, lr x0.1 after epoch 11: the official
# GroupDETR branch's 12-epoch script (`--epochs 12 --lr_drop 11`).
_base_ = './schedule_50e.py'
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[11], gamma=0.1)
]
