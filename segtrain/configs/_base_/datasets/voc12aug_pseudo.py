# PASCAL VOC 2012 train_aug pseudo labels from stage-one shards (train); VOC val GT (validation, test). The data part of
# every VOC stage-two config. The paths are the stage-one defaults: `tools/gen_pseudo.sh voc` reads the dataset under
# $CEP_DATA_ROOT (else the checkout's data/) and writes its shards to outputs/voc_train_aug, so `tools/train_seg.sh`
# runs after it with no path given (tools/train_seg.sh runs from the repository root).
custom_imports = dict(imports=['segtrain'], allow_failed_imports=False)

data_root = '{{$CEP_DATA_ROOT:data}}/VOCdevkit/VOC2012'
shards_dir = 'outputs/voc_train_aug'             # tools/gen_pseudo.sh voc writes it; override with --shards
num_classes = 21
class_set = 'voc'
expected_dataset = 'voc'
crop_size = (512, 512)
test_scale = (2048, 512)                         # Resize(keep_ratio) of the test pipeline; TTA scales multiply it

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
        class_set=class_set,
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
