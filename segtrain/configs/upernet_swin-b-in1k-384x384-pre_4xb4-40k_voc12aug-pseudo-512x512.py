# UPerNet with a Swin-B backbone (patch 4, window 12, ImageNet-1k pretrained at 384x384) on PASCAL VOC 2012 train_aug
# pseudo labels from stage-one shards; validated on VOC val GT. mmseg's Swin recipe
# (swin-base-patch4-window12-in1k-384x384-pre_upernet_8xb2-160k_ade20k-512x512: AdamW lr 6e-5, weight decay 0.01, no
# decay on norms and position tables, 1,500 warm-up iterations, then linear decay) over 40k iterations of 16 images
# (4 GPUs x 4), with BN in the heads (train_seg.py switches to SyncBN when several GPUs are used).
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    './_base_/datasets/voc12aug_pseudo.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/adamw_40k.py',
]
num_classes = 21
norm_cfg = dict(type='BN', requires_grad=True)
# mmseg's Swin-B ImageNet-1k weights; the name ends in the first 8 hex digits of the file's SHA-256, checked when
# tools/train_seg.sh downloads it (segtrain/pretrained.py)
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/swin_base_patch4_window12_384_20220317-55b0104a.pth'

model = dict(
    data_preprocessor=dict(size=(512, 512)),
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
        pretrain_img_size=384,
        embed_dims=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=12),
    decode_head=dict(in_channels=[128, 256, 512, 1024], num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=512, num_classes=num_classes, norm_cfg=norm_cfg))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)}))
