# A tiny DeepLabV3+ (ResNetV1c-18, random init, 64x64 crops, a few iterations) on the demo's shards: the smoke test
# of stage two on a CPU. data/demo has no GT masks, so there is no validation and test_seg only writes predictions.
_base_ = [
    'mmseg::_base_/models/deeplabv3plus_r50-d8.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['segtrain'], allow_failed_imports=False)

data_root = 'data/demo'
shards_dir = 'outputs/demo'  # the output of tools/gen_pseudo.sh demo
num_classes = 21
class_set = 'voc'
crop_size = (64, 64)
test_scale = (128, 64)
max_iters = 20
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(depth=18, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=512, channels=32, dilations=(1, 2, 3, 4), c1_in_channels=64, c1_channels=8,
                     num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, channels=16, num_classes=num_classes, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadShardLabel'),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=test_scale, keep_ratio=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='ShardPseudoLabelDataset',
        shards_dir=shards_dir,
        num_classes=num_classes,
        class_set=class_set,
        data_root=data_root,
        data_prefix=dict(img_path='images'),
        pipeline=train_pipeline))
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ClassSetSegDataset',
        class_set=class_set,
        data_root=data_root,
        data_prefix=dict(img_path='images'),
        img_suffix='.jpg',
        pipeline=test_pipeline))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])   # replaced by the PNG writer in test_seg
test_cfg = dict(type='TestLoop')
eval_gt = None          # no GT for the demo images: test_seg writes predictions only

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005))
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=10, max_keep_ckpts=2))
env_cfg = dict(cudnn_benchmark=False)
