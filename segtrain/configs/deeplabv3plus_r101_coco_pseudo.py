# Renamed to deeplabv3plus_r101-d8_4xb4-20k_coco14-pseudo-512x512.py (mmsegmentation's naming scheme,
# docs/stage_two.md). This alias keeps the old name working for one release; loading it warns.
_base_ = ['./deeplabv3plus_r101-d8_4xb4-20k_coco14-pseudo-512x512.py']
renamed_to = 'deeplabv3plus_r101-d8_4xb4-20k_coco14-pseudo-512x512.py'
