"""SAM image-encoder attention through ``torch.nn.functional.scaled_dot_product_attention``.

segment_anything's encoder ``Attention`` materialises the full score matrix and adds the decomposed
relative-position bias to it. Here the same bias (built with segment_anything's own ``get_rel_pos``) is passed to
SDPA as its additive ``attn_mask``, so PyTorch picks a fused kernel; windowed and global blocks share this path.
"""

import torch
import torch.nn.functional as F

from pseudolabel import compat

compat.apply()  # before segment_anything imports torchvision
from segment_anything.modeling.image_encoder import Attention, get_rel_pos  # noqa: E402


def fused_attention_forward(self: Attention, x: torch.Tensor) -> torch.Tensor:
    """Drop-in ``Attention.forward``: same inputs, outputs and weights, attention computed by SDPA."""
    batch, h, w, _ = x.shape
    qkv = self.qkv(x).reshape(batch, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # each (B, heads, H*W, C)
    mask = None
    if self.use_rel_pos:  # the decomposed relative-position bias, (B, heads, H*W, H*W)
        r_q = q.reshape(batch * self.num_heads, h, w, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(h, h, self.rel_pos_h))
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(w, w, self.rel_pos_w))
        mask = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(batch, self.num_heads, h * w, h * w)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
    out = out.view(batch, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(batch, h, w, -1)
    return self.proj(out)


def install_fused_attention(model: torch.nn.Module) -> int:
    """Route every encoder ``Attention`` in ``model`` through SDPA; returns how many modules were patched."""
    count = 0
    for module in model.modules():
        if isinstance(module, Attention):
            module.forward = fused_attention_forward.__get__(module, Attention)
            count += 1
    return count
