# DeepLabV3+ ResNet-101 on MS COCO 2014 train pseudo labels (81 classes: background + 80); validated on COCO val
# GT label PNGs (the WeCLIP layout SegmentationClass/val2014/<image id>.png, class indices 0..80, 255 ignore), listed in
# SegmentationClass/val2014.txt: tools/render_coco_gt.py renders both from the instances (the 40,137 annotated images,
# the same set tools/evaluate.py scores with --gt coco:val).
_base_ = ['./deeplabv3plus_r101-d8_4xb4-20k_voc12aug-pseudo-512x512.py']

data_root = '{{$CEP_DATA_ROOT:data}}/coco'    # the stage-one defaults, as in the VOC data base
shards_dir = 'outputs/coco_train'               # tools/gen_pseudo.sh coco writes it
num_classes = 81
class_set = 'coco'
expected_dataset = 'coco'

model = dict(
    decode_head=dict(num_classes=num_classes),
    auxiliary_head=dict(num_classes=num_classes))
train_dataloader = dict(
    dataset=dict(
        shards_dir=shards_dir,
        num_classes=num_classes,
        class_set=class_set,
        expected_dataset=expected_dataset,
        data_root=data_root,
        data_prefix=dict(img_path='train2014')))
val_dataloader = dict(
    dataset=dict(
        class_set=class_set,
        data_root=data_root,
        data_prefix=dict(img_path='val2014', seg_map_path='SegmentationClass/val2014'),
        ann_file='SegmentationClass/val2014.txt'))  # written by tools/render_coco_gt.py (prepare_data.sh coco)
test_dataloader = val_dataloader

eval_gt = 'coco:val'
eval_data_root = data_root
