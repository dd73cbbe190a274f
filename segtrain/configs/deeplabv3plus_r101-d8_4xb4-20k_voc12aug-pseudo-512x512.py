# DeepLabV3+ ResNet-101 (ResNetV1c, ImageNet-pretrained) on PASCAL VOC 2012 train_aug pseudo labels from stage-one
# shards; validated on VOC val GT. mmseg's VOC recipe (deeplabv3plus_r101-d8_4xb4-20k_voc12aug-512x512), with BN
# (train_seg.py switches to SyncBN when several GPUs are used) and the training labels read from the shards.
_base_ = [
    'mmseg::_base_/models/deeplabv3plus_r50-d8.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py',
]
custom_imports = dict(imports=['segtrain'], allow_failed_imports=False)

data_root = 'data/VOCdevkit/VOC2012'
shards_dir = 'work_dirs/shards/voc_train_aug'   # stage-one output; override with --shards
num_classes = 21
class_set = 'voc'
expected_dataset = 'voc'
crop_size = (512, 512)
test_scale = (2048, 512)                         # Resize(keep_ratio) of the test pipeline; TTA scales multiply it
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(depth=101, norm_cfg=norm_cfg),
    decode_head=dict(num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=num_classes, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadShardLabel'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=test_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='ShardPseudoLabelDataset',
        shards_dir=shards_dir,
        num_classes=num_classes,
        expected_dataset=expected_dataset,
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ClassSetSegDataset',
        class_set=class_set,
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# tools/test_seg.sh scores its PNGs with pseudolabel.evaluation against this GT (dataset spec + root)
eval_gt = 'voc:val'
eval_data_root = data_root

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000, max_keep_ckpts=3, save_best='mIoU'))
