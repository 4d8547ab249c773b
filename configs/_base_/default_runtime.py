# Runtime shared by every config: mmdet's default hooks plus the plugin import.
custom_imports = dict(imports=['cdetr_mmdet'], allow_failed_imports=False)
default_scope = 'mmdet'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Atomic writes: an interrupted save never leaves a truncated checkpoint;
    # old checkpoints are deleted only after the new one and last_checkpoint
    # are complete; NaN weights are never saved.
    checkpoint=dict(
        type='CdetrCheckpointHook',
        interval=1,
        max_keep_ckpts=3,
        backend_args=dict(backend='cdetr_atomic_local')),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'),
    # Our hooks live here rather than in custom_hooks: a config that sets its
    # own custom_hooks list replaces the base's, default_hooks dicts merge.
    # load_from / --resume / test checkpoints must fit the model exactly
    # (fine-tuning with another class count: load_from_skip, see README).
    strict_load=dict(type='CdetrStrictLoadHook'),
    # Stops at the first NaN/inf or exploding loss, before its checkpoint.
    divergence_guard=dict(type='CdetrDivergenceGuardHook'),
    # --resume continues with the same augmentation random state.
    random_state=dict(type='CdetrRandomStateHook'))
# Stops training at its start when the head's num_classes differs from the
# dataset's number of classes (the message names both). The dataset check
# reads every split the run uses (annotation file, class mapping, boxes,
# image headers) before the first iteration: errors stop the run, warnings
# are one summary per split. Off: --cfg-options dataset_check.enabled=False
custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='CdetrDatasetCheckHook')
]
dataset_check = dict(enabled=True, small_box_fraction=0.5)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)

# The stock loops; each schedule sets its train_cfg (epochs, val interval).
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

log_level = 'INFO'
load_from = None
resume = False
