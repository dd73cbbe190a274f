"""Fused SAM encoder attention against segment_anything's stock encoder (random weights)."""

import copy

import pytest
import torch
from segment_anything.modeling.image_encoder import ImageEncoderViT

from pseudolabel.sam.fused_attention import install_fused_attention


def tiny_encoder() -> ImageEncoderViT:
    torch.manual_seed(0)
    encoder = ImageEncoderViT(img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2, window_size=3,
                              global_attn_indexes=(1,), use_rel_pos=True, out_chans=16).eval()
    for block in encoder.blocks:  # random (not zero) relative-position tables so the bias matters
        torch.nn.init.normal_(block.attn.rel_pos_h, std=0.5)
        torch.nn.init.normal_(block.attn.rel_pos_w, std=0.5)
    return encoder


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_fused_encoder_matches_stock(dtype, tol):
    stock = tiny_encoder().to(dtype)
    fused = copy.deepcopy(stock)
    assert install_fused_attention(fused) == 2  # one windowed, one global block
    image = torch.randn(2, 3, 64, 64, dtype=dtype)
    with torch.no_grad():
        expected, got = stock(image), fused(image)
    assert torch.allclose(got, expected, atol=tol, rtol=tol), (got - expected).abs().max()
