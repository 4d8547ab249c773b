# The official recipe: AdamW 1e-4 (backbone 1e-5), wd 1e-4, grad-norm clip
# 0.1, 50 epochs with lr x0.1 after epoch 40 (paper, section 4.1), total
# batch 16. schedule_75e.py and schedule_108e.py change only the length.
# `fused=True`: PyTorch's one-kernel AdamW (CPU and CUDA), the same update as
# the per-parameter loop to float rounding (2e-7 after 12 steps of R50) and
# ~2.7x faster on CPU (docs/benchmarks.md); drop it to get the loop back.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4, fused=True),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))

max_epochs = 50
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)

param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[40], gamma=0.1)
]

# Base batch: 8 GPUs x 2 images. Enable with `--auto-scale-lr`.
auto_scale_lr = dict(base_batch_size=16)
