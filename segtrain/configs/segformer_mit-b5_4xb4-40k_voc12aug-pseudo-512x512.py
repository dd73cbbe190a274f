# SegFormer MiT-B5 (ImageNet-1k pretrained) on PASCAL VOC 2012 train_aug pseudo labels from stage-one shards; validated
# on VOC val GT. mmseg's SegFormer recipe (segformer_mit-b5_8xb2-160k_ade20k-512x512: AdamW lr 6e-5, weight decay
# 0.01, head lr x10, 1,500 warm-up iterations, then linear decay) over 40k iterations of 16 images (4 GPUs x 4), with
# BN in the head (train_seg.py switches to SyncBN when several GPUs are used).
_base_ = [
    'mmseg::_base_/models/segformer_mit-b0.py',
    './_base_/datasets/voc12aug_pseudo.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/adamw_40k.py',
]
num_classes = 21
norm_cfg = dict(type='BN', requires_grad=True)
# mmseg's MiT-B5 ImageNet-1k weights; the name ends in the first 8 hex digits of the file's SHA-256, checked when
# tools/train_seg.sh downloads it (segtrain/pretrained.py)
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b5_20220624-658746d9.pth'

model = dict(
    data_preprocessor=dict(size=(512, 512)),
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
        embed_dims=64,
        num_heads=[1, 2, 5, 8],
        num_layers=[3, 6, 40, 3]),
    decode_head=dict(in_channels=[64, 128, 320, 512], num_classes=num_classes, norm_cfg=norm_cfg))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'pos_block': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
        'head': dict(lr_mult=10.)}))
