# The schedule of mmseg's SegFormer and Swin recipes over 40k iterations: AdamW (lr 6e-5, betas 0.9/0.999, weight
# decay 0.01), 1,500 linear warm-up iterations, then linear decay to 0; mmseg's 40k loops and hooks, keeping the best
# mIoU checkpoint. Each model config adds its own paramwise_cfg (which parameters get no decay or another lr).
_base_ = ['mmseg::_base_/schedules/schedule_40k.py']

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=40000, by_epoch=False),
]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000, max_keep_ckpts=3, save_best='mIoU'))
