# DeepLabV3+ ResNet-101 (ResNetV1c, ImageNet-pretrained) on PASCAL VOC 2012 train_aug pseudo labels from stage-one
# shards; validated on VOC val GT. mmseg's VOC recipe (deeplabv3plus_r101-d8_4xb4-20k_voc12aug-512x512), with BN
# (train_seg.py switches to SyncBN when several GPUs are used) and the training labels read from the shards.
_base_ = [
    'mmseg::_base_/models/deeplabv3plus_r50-d8.py',
    './_base_/datasets/voc12aug_pseudo.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py',
]
num_classes = 21
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=(512, 512)),
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(depth=101, norm_cfg=norm_cfg),
    decode_head=dict(num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=num_classes, norm_cfg=norm_cfg))

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000, max_keep_ckpts=3, save_best='mIoU'))
