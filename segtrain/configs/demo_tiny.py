# Renamed to deeplabv3plus_r18-d8_1xb2-20iter_demo-pseudo-64x64.py (mmsegmentation's naming scheme,
# docs/stage_two.md). This alias keeps the old name working for one release; loading it warns.
_base_ = ['./deeplabv3plus_r18-d8_1xb2-20iter_demo-pseudo-64x64.py']
renamed_to = 'deeplabv3plus_r18-d8_1xb2-20iter_demo-pseudo-64x64.py'
