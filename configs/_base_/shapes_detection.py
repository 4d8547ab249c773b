# The synthetic shapes (cdetr_mmdet.data.synthetic_shapes: 128x128 images,
# 4 classes), shared by the demo and the convergence benchmark. Their scripts
# (tools/demo.py, benchmarks/convergence.py) set the data paths.
data_root = 'data/shapes/'
img_size = 128
classes = ('ellipse', 'rectangle', 'triangle', 'cross')
metainfo = dict(classes=classes)
# Both splits; each adds its annotation file, image folder and pipeline.
dataset_common = dict(
    type='CdetrCocoDataset', data_root=data_root, metainfo=metainfo)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='CdetrClampBoxes'),  # as the official code: clamp to the image
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    # Bad inputs named also through mmdet's inference_detector/DetInferencer
    # (cdetr_mmdet.data.check_image): files checked before decoding, images
    # after loading.
    dict(type='LoadImageFromFile',
         backend_args=dict(backend='cdetr_checked_local')),
    dict(type='CdetrCheckImage', scale=(img_size, img_size), keep_ratio=True),
    # Any image (e.g. tools/infer.py's) is brought to the training scale.
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        dataset_common,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        dataset_common,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CdetrCocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric='bbox')
test_evaluator = val_evaluator
