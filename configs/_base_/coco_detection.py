# COCO 2017 with DETR's multi-scale training augmentation; test at 800x1333.
dataset_type = 'CdetrCocoDataset'
data_root = 'data/coco/'
backend_args = None

_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333),
           (640, 1333), (672, 1333), (704, 1333), (736, 1333), (768, 1333),
           (800, 1333)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='CdetrClampBoxes'),  # as the official code: clamp to the image
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=_scales, keep_ratio=True)],
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(400, 1333), (500, 1333), (600, 1333)],
                    keep_ratio=True),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True),
                dict(
                    type='RandomChoiceResize',
                    scales=_scales,
                    keep_ratio=True)
            ]
        ]),
    dict(type='PackDetInputs')
]
test_scale = (1333, 800)
test_pipeline = [
    # Bad inputs named also through mmdet's inference_detector/DetInferencer
    # (cdetr_mmdet.data.check_image): files checked before decoding, images
    # after loading. A storage backend_args above replaces the file check.
    dict(type='LoadImageFromFile',
         backend_args=backend_args or dict(backend='cdetr_checked_local')),
    dict(type='CdetrCheckImage', scale=test_scale, keep_ratio=True),
    dict(type='Resize', scale=test_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CdetrCocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
