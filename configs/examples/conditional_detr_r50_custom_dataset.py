# Fine-tune the COCO-trained R50 model on your own COCO-format dataset.
# 1. Set the classes (their order = label ids) and num_classes to match.
# 2. Point the paths at your data.
# 3. Load the COCO checkpoint except its class head (load_from_skip below);
#    every other tensor must fit, or training stops naming the offenders.
_base_ = '../conditional_detr_r50_50e.py'

classes = ('cat', 'dog', 'bird')
data_root = 'data/my_dataset/'

model = dict(bbox_head=dict(num_classes=len(classes)))

# Both splits: your data root and classes; each its annotation file and images.
dataset_common = dict(data_root=data_root, metainfo=dict(classes=classes))
train_dataloader = dict(
    dataset=dict(dataset_common, ann_file='annotations/train.json',
                 data_prefix=dict(img='images/train/')))
val_dataloader = dict(
    dataset=dict(dataset_common, ann_file='annotations/val.json',
                 data_prefix=dict(img='images/val/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

# The backbone, transformer and box head start from COCO; the class head is
# new. A shorter schedule usually suffices when fine-tuning.
load_from = 'coco_r50.pth'
load_from_skip = ['bbox_head.fc_cls']  # another class count: starts fresh
max_epochs = 24
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[18], gamma=0.1)
]
