"""The modern stage-two segmenters (SegFormer MiT-B5, UPerNet Swin-B): their configs build mmseg's full models from
mmseg's own ``_base_`` files, fetch ImageNet-pretrained backbones through the checked downloader, and train from the
stage-one shards like the DeepLabV3+ config (a smoke run on the CPU at a tiny width: the full models take seconds
per iteration there, and their checkpoints with AdamW state are over a gigabyte)."""
from __future__ import annotations

import json

import pytest
import torch
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from segtrain import pretrained
from segtrain.config import read_config
from tests.fixtures.checkout import REPO
from tests.fixtures.stage_two import SHORT_SCHEDULE
from tests.fixtures.viewer_shards import make_voc_run

CONFIGS = REPO / "segtrain" / "configs"
SEGFORMER = "segformer_mit-b5_4xb4-40k_voc12aug-pseudo-512x512.py"
SWIN = "upernet_swin-b-in1k-384x384-pre_4xb4-40k_voc12aug-pseudo-512x512.py"
# backbone type and its size as mmseg's own B5 / Swin-B configs give it, the parameter count of the full segmentor
# (mmseg's model zoo: SegFormer-B5 about 82M with its 256-channel head, UPerNet Swin-B 121M), the weights' file
FULL = {
    SEGFORMER: ("MixVisionTransformer", dict(embed_dims=64, num_layers=[3, 6, 40, 3]), (80e6, 85e6),
                "mit_b5_20220624-658746d9.pth"),
    SWIN: ("SwinTransformer", dict(embed_dims=128, depths=[2, 2, 18, 2], window_size=12), (118e6, 124e6),
           "swin_base_patch4_window12_384_20220317-55b0104a.pth"),
}
# the same architectures at a tiny width, for a training run of a few seconds
TINY = {
    SEGFORMER: ("model.backbone.embed_dims=8", "model.backbone.num_layers=[1,1,1,1]",
                "model.decode_head.in_channels=[8,16,40,64]", "model.decode_head.channels=16"),
    SWIN: ("model.backbone.embed_dims=16", "model.backbone.depths=[1,1,1,1]", "model.backbone.num_heads=[1,2,2,4]",
           "model.decode_head.in_channels=[16,32,64,128]", "model.decode_head.channels=16",
           "model.auxiliary_head.in_channels=64", "model.auxiliary_head.channels=8"),
}


@pytest.mark.parametrize("name", FULL)
def test_config_builds_mmseg_s_full_model_with_a_checked_imagenet_backbone(name):
    register_all_modules(init_default_scope=True)
    cfg = read_config(CONFIGS / name)
    backbone_type, size, (low, high), weights = FULL[name]
    backbone = cfg.model.backbone
    assert backbone.type == backbone_type and {key: backbone[key] for key in size} == size
    assert cfg.model.decode_head.num_classes == cfg.train_dataloader.dataset.num_classes == 21
    assert cfg.model.decode_head.norm_cfg.type == "BN"      # SyncBN only under torchrun (train_seg.sh --gpus N)
    [checkpoint] = pretrained.pretrained_names(cfg.model)
    url = pretrained.resolve_url(checkpoint)
    assert url.startswith("https://download.openmmlab.com/") and pretrained.cached_path(url).name == weights
    assert torch.hub.HASH_REGEX.search(weights)[1] == weights.rsplit("-", 1)[1][:8]   # the SHA-256 prefix checked
    model = MODELS.build(cfg.model).eval()
    assert low < sum(p.numel() for p in model.parameters()) < high
    with torch.no_grad():
        logits = model.encode_decode(torch.zeros(1, 3, 64, 64), [dict(img_shape=(64, 64), pad_shape=(64, 64))])
    assert logits.shape == (1, 21, 64, 64)
    pretrained.drop_pretrained(cfg.model)                   # --no-pretrained
    assert pretrained.pretrained_names(cfg.model) == []


@pytest.mark.parametrize("name", TINY)
def test_trains_from_the_shards_like_the_deeplab_config(name, tmp_path, monkeypatch):
    from segtrain import train as seg_train

    root, shards, _ = make_voc_run(tmp_path)
    monkeypatch.setenv("CEP_DATA_ROOT", str(root.parents[1]))   # the config's own data root, here the tiny VOC
    work = tmp_path / "work"
    assert seg_train.main([str(CONFIGS / name), "--shards", str(shards), "--work-dir", str(work), "--no-pretrained",
                           "--cfg-options", *SHORT_SCHEDULE, *TINY[name]]) == 0
    assert (work / "iter_2.pth").is_file()
    log = next(work.glob("*/*.log")).read_text()
    assert "Iter(train) [2/2]" in log and "mIoU" in log and "loss:" in log
    assert json.loads((work / "versions.json").read_text())["shards_dir"] == str(shards)
