"""SAM's mask decoder for many single-image prompts, evaluated in a cheaper order with the same result.

``segment_anything``'s ``MaskDecoder`` repeats the 64x64 image embedding once per prompt and then runs every linear
projection of those 4096 image tokens per prompt, although a prompt has only 7 tokens. On a CPU this costs about 1.7
GMAC and 60 ms per prompt, and batching gains little (the per-prompt copies no longer fit in cache). No library
offers another evaluation order, so :class:`SharedImageMaskDecoder` writes one by hand. It reads the decoder's own
modules and weights and computes the same function with these changes:

- In the first layer the image tokens are the same for every prompt, so their key, value and query projections are
  computed once per image.
- Attention against the 7 prompt tokens is re-associated: ``softmax(q Kᵀ) V W_o = softmax(q Kᵀ) (V W_o)`` and
  ``(x W_q)(k)ᵀ = x (W_q kᵀ)``, so no projection of 4096 image tokens runs per prompt. In softmaxes over the image
  tokens, the key bias is dropped, which is exact because it adds a constant to every logit of a row.
- The last cross-attention is evaluated only for the tokens that are used (the IoU token and the 3 multimask tokens).
- The two ``ConvTranspose2d(k=2, s=2)`` of the upscaling are matrix products on channels-last data, with
  ``LayerNorm2d`` as ``F.layer_norm`` over the channels.

The result equals ``MaskDecoder(..., multimask_output=True)`` exactly in real arithmetic. In float32 only the
rounding differs; ``tests/test_sam_decoder.py`` checks this against the library decoder.
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _heads(weight: Tensor, num_heads: int) -> Tensor:
    """``(H*c, D)`` projection weight -> ``(H, c, D)``."""
    return weight.reshape(num_heads, -1, weight.shape[-1])


class SharedImageMaskDecoder:
    """Multimask outputs of a ``segment_anything`` ``MaskDecoder`` for a batch of prompts on one image.

    ``set_image`` takes the image embedding, its positional encoding and the dense prompt embedding (SAM's "no mask"
    embedding) and precomputes what is shared. ``__call__(sparse)`` returns the 3 multimask low-resolution logits
    ``(B, 3, 4h, 4w)`` and their predicted IoUs ``(B, 3)``, as ``MaskDecoder(..., multimask_output=True)`` does.

    ``used_grid=(rows, cols)`` in ``set_image`` computes the logits of the top-left ``rows x cols`` image tokens only
    (``(B, 3, 4 rows, 4 cols)``): SAM's postprocessing crops the padding of its square canvas away, so for a 4:3 image
    a quarter of the logits is never used. On a CPU, give it a prompt or two at a time: the per-prompt tensors then
    stay in cache, and larger batches are slower per prompt.
    """

    def __init__(self, decoder) -> None:
        transformer = decoder.transformer
        self.decoder, self.transformer = decoder, transformer
        self.num_heads = transformer.num_heads
        # the IoU token and the multimask mask tokens (mask token 0, at position 1, is the single-mask output)
        self.used_tokens = [0, *range(2, 2 + decoder.num_multimask_outputs)]
        self.output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        conv1, norm, act1, conv2, act2 = decoder.output_upscaling
        # ConvTranspose2d(k=2, s=2) weights (C_in, C_out, 2, 2) as (C_in, 2*2*C_out) for channels-last products.
        self.upscale1 = (conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, -1), conv1.bias)
        self.upscale2 = (conv2.weight.permute(0, 2, 3, 1).reshape(conv2.in_channels, -1), conv2.bias)
        self.norm, self.act1, self.act2 = norm, act1, act2
        self.image_tokens: Tensor | None = None

    @torch.no_grad()
    def set_image(self, image_embeddings: Tensor, image_pe: Tensor, dense_embeddings: Tensor,
                  used_grid: tuple[int, int] | None = None) -> None:
        """Precompute the image side for ``image_embeddings (1, D, h, w)``; ``used_grid``: see the class."""
        if image_embeddings.shape[0] != 1:
            raise ValueError("SharedImageMaskDecoder works on one image at a time")
        self.grid = tuple(image_embeddings.shape[-2:])
        self.used_grid = tuple(used_grid or self.grid)
        keys = (image_embeddings + dense_embeddings).flatten(2)[0].T.contiguous()  # (N, D)
        self.image_tokens = keys
        self.key_pe = image_pe.flatten(2)[0].T.contiguous()
        keys_pe = keys + self.key_pe
        first = self.transformer.layers[0]
        heads = self.num_heads
        token_to_image, image_to_token = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        self.first_keys = token_to_image.k_proj(keys_pe).unflatten(1, (heads, -1)).transpose(0, 1)
        self.first_values = token_to_image.v_proj(keys).unflatten(1, (heads, -1)).transpose(0, 1)
        queries = image_to_token.q_proj(keys_pe).unflatten(1, (heads, -1))  # (N, H, c)
        self.first_queries = (queries / math.sqrt(queries.shape[-1])).permute(1, 2, 0).contiguous()  # (H, c, N)

    @torch.no_grad()
    def __call__(self, sparse_embeddings: Tensor) -> tuple[Tensor, Tensor]:
        if self.image_tokens is None:
            raise RuntimeError("call set_image first")
        batch = sparse_embeddings.shape[0]
        tokens = torch.cat([self.output_tokens.expand(batch, -1, -1), sparse_embeddings], dim=1)
        first = self.transformer.layers[0]
        # Layer 1: the image tokens are shared by all prompts.
        queries = self._self_attention(first, tokens, tokens)
        queries = self._token_mlp(first, queries + self._token_to_shared_image(first, queries + tokens))
        attn = first.cross_attn_image_to_token
        logits = attn.k_proj(queries + tokens).unflatten(2, (self.num_heads, -1)).transpose(1, 2) @ self.first_queries
        keys = first.norm4(self._image_to_token(attn, logits, queries, self.image_tokens))
        # Further layers: the image tokens differ per prompt.
        for layer in self.transformer.layers[1:]:
            queries = self._self_attention(layer, queries, tokens)
            keys_pe = keys + self.key_pe
            token_to_image = self._token_to_image(layer.cross_attn_token_to_image, queries + tokens, keys, keys_pe)
            queries = self._token_mlp(layer, queries + token_to_image)
            logits = self._image_to_token_logits(layer, queries + tokens, keys_pe)
            keys = layer.norm4(self._image_to_token(layer.cross_attn_image_to_token, logits, queries, keys))
        # Final attention, only for the used tokens.
        used = self.used_tokens
        final = self.transformer.final_attn_token_to_image
        out = queries[:, used] + self._token_to_image(final, (queries + tokens)[:, used], keys, keys + self.key_pe)
        out = self.transformer.norm_final_attn(out)
        iou_pred = self.decoder.iou_prediction_head(out[:, 0])[:, 1:]
        hyper = torch.stack([mlp(out[:, 1 + i]) for i, mlp in enumerate(self.decoder.output_hypernetworks_mlps[1:])],
                            dim=1)
        return self._masks(keys, hyper), iou_pred

    @staticmethod
    def _self_attention(layer, queries: Tensor, tokens: Tensor) -> Tensor:
        """Self-attention and norm1 of a two-way block (``tokens``: the prompt tokens, its positional encoding)."""
        if layer.skip_first_layer_pe:
            return layer.norm1(layer.self_attn(q=queries, k=queries, v=queries))
        q = queries + tokens
        return layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))

    @staticmethod
    def _token_mlp(layer, queries: Tensor) -> Tensor:
        """norm2, MLP, norm3 of a two-way block (token side only)."""
        queries = layer.norm2(queries)
        return layer.norm3(queries + layer.mlp(queries))

    def _token_to_shared_image(self, layer, q: Tensor) -> Tensor:
        """Layer 1 token-to-image attention against the precomputed shared keys and values."""
        attn = layer.cross_attn_token_to_image
        q = attn.q_proj(q).unflatten(2, (self.num_heads, -1)).transpose(1, 2)  # (B, H, T, c)
        weights = torch.softmax(q @ self.first_keys.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
        return attn.out_proj((weights @ self.first_values).transpose(1, 2).flatten(2))

    def _token_to_image(self, attn, q: Tensor, keys: Tensor, keys_pe: Tensor) -> Tensor:
        """Token-to-image attention with per-prompt image tokens ``keys (B, N, D)`` (``keys_pe``: plus the
        positional encoding), re-associated."""
        heads = self.num_heads
        q = attn.q_proj(q).unflatten(2, (heads, -1))  # (B, T, H, c)
        tokens = q.shape[1]
        q_keys = torch.einsum("bthc,hcd->bhtd", q / math.sqrt(q.shape[-1]), _heads(attn.k_proj.weight, heads))
        logits = q_keys.flatten(1, 2) @ keys_pe.transpose(1, 2)  # (B, H*T, N)
        mixed = torch.softmax(logits, dim=-1) @ keys  # (B, H*T, D); the values' bias passes through (rows sum to 1)
        values = torch.einsum("bhtd,hcd->bthc", mixed.unflatten(1, (heads, tokens)), _heads(attn.v_proj.weight, heads))
        return attn.out_proj(values.flatten(2) + attn.v_proj.bias)

    def _image_to_token_logits(self, layer, k: Tensor, keys_pe: Tensor) -> Tensor:
        """Image-to-token logits ``(B, H, T, N)`` with per-prompt image tokens (plus positional encoding)
        ``keys_pe (B, N, D)``, re-associated."""
        attn, heads = layer.cross_attn_image_to_token, self.num_heads
        k = attn.k_proj(k).unflatten(2, (heads, -1))  # (B, T, H, c)
        k = k / math.sqrt(k.shape[-1])
        key_queries = torch.einsum("bthc,hcd->bhtd", k, _heads(attn.q_proj.weight, heads)).flatten(1, 2)
        bias = torch.einsum("hc,bthc->bht", attn.q_proj.bias.reshape(heads, -1), k).flatten(1)[..., None]
        return torch.baddbmm(bias, key_queries, keys_pe.transpose(1, 2)).unflatten(1, (heads, -1))

    def _image_to_token(self, attn, logits: Tensor, queries: Tensor, residual: Tensor) -> Tensor:
        """``residual`` plus the image-to-token attention output ``(B, N, D)`` from its logits ``(B, H, T, N)``,
        re-associated. The softmax runs over the tokens (dim 2), with the image tokens contiguous."""
        heads = self.num_heads
        values = attn.v_proj(queries).unflatten(2, (heads, -1))  # (B, T, H, c)
        out_weight = attn.out_proj.weight.reshape(-1, heads, values.shape[-1])  # (D, H, c)
        projected = torch.einsum("bthc,dhc->bhtd", values, out_weight).flatten(1, 2)  # (B, H*T, D)
        weights = torch.softmax(logits, dim=2).flatten(1, 2).transpose(1, 2)  # (B, N, H*T)
        return torch.baddbmm(residual + attn.out_proj.bias, weights, projected)

    def _masks(self, keys: Tensor, hyper: Tensor) -> Tensor:
        """Upscaling and hypernetwork product: ``(B, N, D)`` image tokens -> ``(B, 3, 4 rows, 4 cols)`` logits of the
        used grid. Each image token gives its own 4x4 block of logits; on a CPU they go through 16 rows of tokens at a
        time, which keeps the 16x larger intermediate activations in cache (about 1.5x faster than one pass)."""
        batch, (rows, cols) = keys.shape[0], self.used_grid
        keys = keys.unflatten(1, self.grid)[:, :rows, :cols].flatten(1, 2)  # (B, rows * cols, D)
        (weight1, bias1), (weight2, bias2) = self.upscale1, self.upscale2
        bias1, bias2 = bias1.repeat(4), bias2.repeat(4)
        step = 16 * cols if keys.device.type == "cpu" else rows * cols
        masks = keys.new_empty(batch, rows * cols, 16, hyper.shape[1])
        for b, start in itertools.product(range(batch), range(0, rows * cols, step)):
            x = torch.addmm(bias1, keys[b, start: start + step], weight1).unflatten(1, (4, -1))  # (n, 2*2, C1)
            x = self.act1(F.layer_norm(x, x.shape[-1:], self.norm.weight, self.norm.bias, self.norm.eps))
            x = self.act2(torch.addmm(bias2, x.flatten(0, 1), weight2))  # (n * 2*2, 2*2 * C2)
            masks[b, start: start + step] = (x.reshape(-1, hyper.shape[-1]) @ hyper[b].T).unflatten(0, (-1, 16))
        # (token (i, j), sub-pixel (a, b, c, e), mask) -> pixel (4i + 2a + c, 4j + 2b + e)
        masks = masks.reshape(batch, rows, cols, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(batch, -1, 4 * rows, 4 * cols)
