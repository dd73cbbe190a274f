"""SAM's and SAM 2.1's mask decoder for many single-point prompts, evaluated in a cheaper order with the same result
(docs/stage_one.md#speed-and-memory-on-a-cpu: the idea in short, SAM 2.1's differences, measurements).

``MaskDecoder`` repeats the 64x64 image embedding once per prompt and runs every projection of its 4096 tokens per
prompt, although a prompt has only 7 tokens (about 1.7 GMAC a prompt). :class:`SharedImageMaskDecoder` reads the
decoder's own modules and weights and uses that a prompt changes the image tokens only by a few vectors:

- An image-to-token attention adds to image token ``n`` a mix ``Σ_t a[n,h,t] W_o^h v_t^h`` of the prompt's 7 value
  vectors per head, and a LayerNorm ``γ ⊙ (x - mean x) / std(x) + β`` is linear up to one scale per token. So after
  any layer the image tokens are ``keys[n] = σ[n] base[n] + Σ_m c[m,n] z[m] + β``: ``base`` is the image embedding
  through the LayerNorms' linear parts (per image), and each prompt has its own ``σ (N)``, coefficients
  ``c (M, N)`` and vectors ``z (M, D)``, ``M`` about 50 per layer (``7 - 1`` tokens per head, as the mix weights sum
  to one, plus a constant).
- Every projection of the image tokens splits into a per-image product of ``base`` and a per-prompt product of the
  vectors; attention against the prompt tokens is re-associated (``(x W_q) kᵀ = x (W_q kᵀ)``); a LayerNorm's
  variance follows from a Gram matrix of the vectors and their products with ``base`` (per image, in each head's
  value space). Logit terms that are constant along a softmax (key biases) are dropped.
- The last cross-attention runs only for the used tokens (the IoU token and the 3 multimask tokens), the upscaling
  only over the image tokens that SAM's crop keeps, its transposed convolutions as channels-last matrix products
  (the first, linear in the tokens, split as a projection).

The result equals ``MaskDecoder(..., multimask_output=True)``'s masks and IoUs in real arithmetic; in float32 only
the rounding differs (``tests/test_sam_decoder.py`` checks this against both libraries' decoders).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

MASK_PROMPTS = 32  # prompts upscaled together (about 8 MB of activations each over all rows)
MASK_ROWS = 16  # rows of image tokens upscaled together (a CPU's caches keep their activations)


def _centred(x: Tensor) -> Tensor:
    """Rows of ``x`` minus their means (``P x``)."""
    return x - x.mean(dim=-1, keepdim=True)


def _affine_part(x: Tensor, norm) -> Tensor:
    """The linear part ``γ ⊙ (x - mean x)`` of a LayerNorm, applied to the rows of ``x``."""
    return _centred(x) * norm.weight


@dataclass
class _PromptTokens:
    """The image tokens of a batch of prompts: ``σ[b, n] base[n] + Σ_m coef[b, m, n] z[b, m] + β`` (see the
    module). The vectors ``z`` follow from the image-to-token values of the layers that ran (:meth:`_layer_vectors`):
    per layer, ``coef`` has ``H*(T-1)`` rows for the mix weights of ``v_t - v_0`` (``t > 0``, head-major) and one
    for the constant (``W_o v_0`` plus the biases)."""

    sigma: Tensor | None  # (B, N); None means 1
    rows: Tensor  # (B, M of all layers, N), filled layer by layer
    used: int = 0  # M so far

    @property
    def coef(self) -> Tensor:
        return self.rows[:, : self.used]


class SharedImageMaskDecoder:
    """Multimask outputs of a ``segment_anything`` or ``sam2`` ``MaskDecoder`` for a batch of prompts on several images.

    ``set_images`` precomputes the image side; ``__call__(sparse, images=n)`` decodes ``B / n`` prompts on each of
    the first ``n`` images (prompts image by image) into the 3 multimask low-resolution logits ``(B, 3, 4h, 4w)`` and
    their predicted IoUs ``(B, 3)``, as ``MaskDecoder(..., multimask_output=True)`` does. On a CPU, give it about 4
    prompts at a time: their coefficients (about 1.6 MB each) then stay in cache.
    """

    def __init__(self, decoder) -> None:
        transformer = decoder.transformer
        self.decoder, self.transformer = decoder, transformer
        self.layers = list(transformer.layers)
        self.num_heads = transformer.num_heads
        # SAM 2.1's object-score token precedes the IoU token; then the mask tokens
        score_token = [decoder.obj_score_token.weight] if getattr(decoder, "pred_obj_scores", False) else []
        iou = len(score_token)
        # the IoU token and the multimask mask tokens (mask token 0, after the IoU token, is the single-mask output)
        self.used_tokens = [iou, *range(iou + 2, iou + 2 + decoder.num_multimask_outputs)]
        self.output_tokens = torch.cat([*score_token, decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        self.high_res = getattr(decoder, "use_high_res_features", False)
        conv1, norm, act1, conv2, act2 = decoder.output_upscaling
        # ConvTranspose2d(k=2, s=2) weights (C_in, C_out, 2, 2) as (C_in, 2*2*C_out) for channels-last products.
        self.upscale1 = (conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, -1), conv1.bias.repeat(4))
        self.upscale2 = (conv2.weight.permute(0, 2, 3, 1).reshape(conv2.in_channels, -1), conv2.bias.repeat(4))
        self.norm, self.act1, self.act2 = norm, act1, act2
        # Where layer s's attention output lands after the LayerNorms of layers s..j-1 (the image tokens' space
        # entering layer j > s, for the per-image LayerNorm products of `set_images`): rows of `maps[s][j]` are the
        # images of the output projection's input units; `constants[s][j]` is that of layer s's constant (β of
        # layer s-1 plus the output projection's bias).
        self.maps: list[dict[int, Tensor]] = []
        self.constants: list[dict[int, Tensor]] = []
        with torch.no_grad():
            previous_beta = torch.zeros_like(self.layers[0].norm4.bias)
            for s, layer in enumerate(self.layers):
                attn = layer.cross_attn_image_to_token
                rows, constant = attn.out_proj.weight.T, previous_beta + attn.out_proj.bias
                self.maps.append({s: rows})
                self.constants.append({s: constant})
                for j in range(s + 1, len(self.layers)):
                    rows = _affine_part(rows, self.layers[j - 1].norm4)
                    constant = _affine_part(constant, self.layers[j - 1].norm4)
                    self.maps[s][j], self.constants[s][j] = rows, constant
                previous_beta = layer.norm4.bias
            # the attentions' parts that depend on the weights only (β of the previous layer, 0 before the first):
            # the token-to-image values' constants (then the final attention's) and the image-to-token queries'
            betas = [torch.zeros_like(previous_beta)] + [layer.norm4.bias for layer in self.layers]
            self.value_constants = [layer.cross_attn_token_to_image.v_proj(beta)
                                    for layer, beta in zip(self.layers, betas)]
            self.value_constants.append(transformer.final_attn_token_to_image.v_proj(betas[-1]))
            self.query_constants = [layer.cross_attn_image_to_token.q_proj(beta)
                                    for layer, beta in zip(self.layers, betas)]
            self.upscale_constant = betas[-1] @ self.upscale1[0] + self.upscale1[1]
        self.image: dict | None = None

    # ----------------------------------------------------------------------------------------------- per image
    @torch.no_grad()
    def set_images(self, image_embeddings: Tensor, image_pe: Tensor, dense_embeddings: Tensor,
                   used_grid: tuple[int, int] | None = None, high_res_features: list[Tensor] | None = None) -> None:
        """Precompute the image side of ``image_embeddings (n, D, h, w)``, their positional encoding and the dense
        prompt embedding (SAM's "no mask" embedding). ``used_grid=(rows, cols)``: compute the logits of the top-left
        ``rows x cols`` image tokens only (SAM's postprocessing crops its canvas's padding away).
        ``high_res_features``: a SAM 2.1 decoder's maps ``[feat_s0, feat_s1]``, each ``(n, C, s h, s w)``, through
        its ``conv_s0`` / ``conv_s1`` (as ``SAM2Base.forward_image`` returns them)."""
        if self.high_res != (high_res_features is not None):
            raise ValueError("high_res_features: the decoder's high-resolution maps [feat_s0, feat_s1] are needed by "
                             "a decoder that uses them and only by one")
        self.grid = tuple(image_embeddings.shape[-2:])
        self.used_grid = tuple(used_grid or self.grid)
        base = (image_embeddings + dense_embeddings).flatten(2).transpose(1, 2).contiguous()  # (n, N, D)
        pe = image_pe.flatten(2)[0].T.contiguous()
        layers = []
        for j, layer in enumerate(self.layers):
            centred = _centred(base)
            layers.append({
                "token_to_image": self._attention_keys(layer.cross_attn_token_to_image, base, pe, j == 0),
                "queries": self._with_pe(layer.cross_attn_image_to_token.q_proj.weight, base, pe, j == 0),
                # norm4's variance: |P base|² and P base against the vectors of this and every earlier layer
                "base_norm": centred.square().sum(dim=-1),
                "cross": [self._by_head(centred @ self.maps[s][j].T).transpose(-2, -1).contiguous()
                          for s in range(j + 1)],  # (n, H, c, N)
                "cross_constant": [centred @ self.constants[s][j] for s in range(j + 1)],
            })
            base = _affine_part(base, layer.norm4)
        rows, cols = self.used_grid
        used = base.unflatten(1, self.grid)[:, :rows, :cols].flatten(1, 2)
        constant = self.upscale_constant.expand(len(used), rows * cols, -1)
        fine = None
        if high_res_features is not None:
            feat_s0, feat_s1 = high_res_features
            constant = constant + _token_blocks(feat_s1, self.used_grid, 1)
            fine = _token_blocks(feat_s0, self.used_grid, 2)
        self.image = {
            "layers": layers,
            "final": self._attention_keys(self.transformer.final_attn_token_to_image, base, pe, False),
            "upscale_base": used @ self.upscale1[0],  # (n, rows * cols, 2*2*C1)
            "upscale_constant": constant,  # the same shape: the bias and β's part, plus feat_s1
            "upscale_fine": fine,  # None, or feat_s0 as (n, rows * cols, 2*2, 2*2*C2)
        }

    def _by_head(self, x: Tensor) -> Tensor:
        """``(..., N, H*c)`` -> ``(..., H, N, c)``."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2).contiguous()

    def _attention_keys(self, attn, base: Tensor, pe: Tensor, first: bool) -> dict:
        """Per-image parts of a token-to-image attention: keys (the image tokens plus ``pe``, see
        :meth:`_with_pe`) and values (the image tokens, ``(n, H, N, c)``)."""
        return {"keys": self._with_pe(attn.k_proj.weight, base, pe, first),
                "values": self._by_head(F.linear(base, attn.v_proj.weight))}

    def _with_pe(self, weight: Tensor, base: Tensor, pe: Tensor, first: bool) -> Tensor:
        """``weight`` times the image tokens plus ``pe``, by head: ``(n, H, c, N)`` of ``base + pe`` in the first
        layer (where the image tokens are ``base``), else ``(n, H, c, 2N)``: ``base``'s, to be scaled by σ, then
        ``pe``'s."""
        by_head = lambda x: self._by_head(F.linear(x, weight)).transpose(-2, -1)  # noqa: E731
        if first:
            return by_head(base + pe)
        of_base = by_head(base)
        return torch.cat([of_base, by_head(pe).expand_as(of_base)], dim=-1)

    # ---------------------------------------------------------------------------------------------- per prompt
    @torch.no_grad()
    def __call__(self, sparse_embeddings: Tensor, images: int = 1) -> tuple[Tensor, Tensor]:
        if self.image is None:
            raise RuntimeError("call set_images first")
        held, batch = self.image["upscale_base"].shape[0], sparse_embeddings.shape[0]
        if not 1 <= images <= held:
            raise ValueError(f"{images} images asked for, {held} held")
        if batch % images:
            raise ValueError(f"{batch} prompts do not split evenly over {images} images")
        parts = _first(self.image, images)
        tokens = torch.cat([self.output_tokens.expand(batch, -1, -1), sparse_embeddings], dim=1)
        queries = tokens
        rows = len(self.layers) * (self.num_heads * (tokens.shape[1] - 1) + 1)
        image = _PromptTokens(None, tokens.new_empty(batch, rows, self.grid[0] * self.grid[1]))
        layer_values = []  # per layer, the image-to-token values of all prompts (B, H, T, c)
        vectors = None  # the prompts' vectors z (B, M, D) in the space of the image tokens; none before layer 0
        for j, (layer, layer_parts) in enumerate(zip(self.layers, parts["layers"])):
            if layer.skip_first_layer_pe:  # self-attention and norm1 (tokens: the prompt tokens' positional encoding)
                queries = layer.norm1(layer.self_attn(q=queries, k=queries, v=queries))
            else:
                q = queries + tokens
                queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
            attended = self._token_to_image(layer.cross_attn_token_to_image, queries + tokens, image, vectors,
                                            layer_parts["token_to_image"], self.value_constants[j])
            queries = layer.norm2(queries + attended)
            queries = layer.norm3(queries + layer.mlp(queries))
            attn = layer.cross_attn_image_to_token
            keys = self._by_prompt_head(attn.k_proj(queries + tokens), scaled=True)
            self._image_to_token(attn, keys, image, vectors, layer_parts["queries"], self.query_constants[j])
            layer_values.append(self._by_prompt_head(attn.v_proj(queries)))
            added = self._layer_vectors(layer_values[-1], j)
            vectors = added if vectors is None else torch.cat([vectors, added], dim=1)
            vectors = self._layer_norm(image, vectors, layer_values, layer_parts, layer.norm4)
        # Final attention, only for the used tokens.
        used, final = self.used_tokens, self.transformer.final_attn_token_to_image
        out = queries[:, used] + self._token_to_image(final, (queries + tokens)[:, used], image, vectors,
                                                      parts["final"], self.value_constants[-1])
        out = self.transformer.norm_final_attn(out)
        iou_pred = self.decoder.iou_prediction_head(out[:, 0])[:, 1:]
        hyper = torch.stack([mlp(out[:, 1 + i]) for i, mlp in enumerate(self.decoder.output_hypernetworks_mlps[1:])],
                            dim=1)
        return self._masks(image, vectors, hyper, parts), iou_pred

    def _by_prompt_head(self, x: Tensor, scaled: bool = False) -> Tensor:
        """``(B, T, H*c)`` -> ``(B, H, T, c)``, divided by ``sqrt(c)`` if ``scaled`` (attention logits)."""
        x = x.unflatten(2, (self.num_heads, -1)).transpose(1, 2)
        return x / math.sqrt(x.shape[-1]) if scaled else x

    @staticmethod
    def _per_image(x: Tensor, per_image: Tensor) -> Tensor:
        """``x (B, H, T, c)`` of ``n`` images' prompts (``B = n P``) times each image's ``(n, H, c, X)``, as
        ``(n, H, P, T, X)``: one product per image and head for all its prompts (a broadcast product would copy the
        per-image tensor once per prompt)."""
        batch, heads, tokens, channels = x.shape
        images = per_image.shape[0]
        prompts = batch // images
        x = x.view(images, prompts, heads, tokens, channels).transpose(1, 2).reshape(images, heads, -1, channels)
        return (x @ per_image).view(images, heads, prompts, tokens, -1)

    def _logits(self, products: Tensor, sigma: Tensor | None) -> Tensor:
        """Prompt-major logits ``(B, H, T, N)`` from :meth:`_per_image` products with :meth:`_with_pe`'s tensors."""
        images, heads, prompts, tokens, _ = products.shape
        n = self.grid[0] * self.grid[1]
        out = products.new_empty(images, prompts, heads, tokens, n)
        products = products.transpose(1, 2)  # (n, P, H, T, X)
        if sigma is None:
            out.copy_(products)
        else:
            pe, base = products[..., n:], products[..., :n]
            torch.mul(base, sigma.view(images, prompts, 1, 1, n), out=out).add_(pe)
        return out.view(images * prompts, heads, tokens, n)

    def _layer_vectors(self, values: Tensor, s: int) -> Tensor:
        """Layer ``s``'s vectors ``z (B, H*(T-1) + 1, D)`` from its image-to-token values ``(B, H, T, c)``, as its
        attention adds them to the image tokens: ``W_o (v_t - v_0)`` by head, then ``W_o v_0`` plus the constant."""
        rows = self.maps[s][s].unflatten(0, (self.num_heads, -1))[None]  # (1, H, c, D): the same for every prompt
        mixed = self._per_image(values[:, :, 1:] - values[:, :, :1], rows)[0].transpose(0, 1).flatten(1, 2)
        constant = values[:, :, 0].flatten(1) @ self.maps[s][s] + self.constants[s][s]
        return torch.cat([mixed, constant[:, None]], dim=1)

    def _add_vector_logits(self, logits: Tensor, x: Tensor, weight: Tensor, image: _PromptTokens,
                           vectors: Tensor | None) -> None:
        """Add the prompts' part of the attention logits of ``x (B, H, T, c)`` against the image tokens projected by
        ``weight``, ``Σ_m (x · W z_m) coef[m, n]``, to ``logits (B, H, T, N)`` in place."""
        if not image.used:
            return
        projected = F.linear(vectors, weight).unflatten(2, (self.num_heads, -1))  # (B, M, H, c)
        by_vector = torch.einsum("bhtc,bmhc->bhtm", x, projected).flatten(1, 2)
        torch.baddbmm(logits.flatten(1, 2), by_vector, image.coef, out=logits.flatten(1, 2))

    def _token_to_image(self, attn, q: Tensor, image: _PromptTokens, vectors: Tensor | None, parts: dict,
                        value_constant: Tensor) -> Tensor:
        """Token-to-image attention of tokens ``q (B, T, D)`` to the prompts' image tokens, re-associated and split
        into the per-image ``parts``, the per-prompt vectors and the values' constant."""
        q = self._by_prompt_head(attn.q_proj(q), scaled=True)  # (B, H, T, c)
        batch, heads, tokens, _ = q.shape
        logits = self._logits(self._per_image(q, parts["keys"]), image.sigma)  # key biases: constant along softmax
        self._add_vector_logits(logits, q, attn.k_proj.weight, image, vectors)
        weights = torch.softmax(logits, dim=-1)  # (B, H, T, N)
        images = parts["values"].shape[0]
        prompt_major = (images, batch // images, heads, tokens, weights.shape[-1])
        scaled = weights.new_empty(images, heads, batch // images, tokens, weights.shape[-1])  # image and head major
        if image.sigma is None:
            scaled.transpose(1, 2).copy_(weights.view(prompt_major))
        else:
            torch.mul(weights.view(prompt_major), image.sigma.view(*prompt_major[:2], 1, 1, -1),
                      out=scaled.transpose(1, 2))
        values = (scaled.flatten(2, 3) @ parts["values"]).view(images, heads, -1, tokens, parts["values"].shape[-1])
        values = values.transpose(1, 2).reshape(batch, heads, tokens, -1)  # a view for one image
        if image.used:
            vector_values = F.linear(vectors, attn.v_proj.weight).unflatten(2, (heads, -1))
            mixed = (weights.flatten(1, 2) @ image.coef.transpose(1, 2)).view(batch, heads, tokens, -1)
            values = values + torch.einsum("bhtm,bmhc->bhtc", mixed, vector_values)
        return attn.out_proj(values.transpose(1, 2).flatten(2) + value_constant)

    def _image_to_token(self, attn, k: Tensor, image: _PromptTokens, vectors: Tensor | None, queries: Tensor,
                        query_constant: Tensor) -> None:
        """Image-to-token attention with the prompts' keys ``k (B, H, T, c)`` (scaled) and the per-image ``queries``
        (:meth:`_with_pe`): appends the mix weights (and the constant's row) to ``image.rows``."""
        heads = self.num_heads
        logits = self._logits(self._per_image(k, queries), image.sigma)  # (B, H, T, N)
        logits += k @ query_constant.unflatten(0, (heads, -1, 1))
        self._add_vector_logits(logits, k, attn.q_proj.weight, image, vectors)
        mix = torch.softmax(logits, dim=2)  # over the prompt tokens; the image tokens stay contiguous
        # Σ_t mix_t W_o v_t = W_o v_0 + Σ_{t>0} mix_t W_o (v_t - v_0): the constant's row absorbs W_o v_0
        stop = image.used + heads * (mix.shape[2] - 1)
        image.rows[:, image.used: stop].view_as(mix[:, :, 1:]).copy_(mix[:, :, 1:])
        image.rows[:, stop] = 1
        image.used = stop + 1

    def _layer_norm(self, image: _PromptTokens, vectors: Tensor, layer_values: list[Tensor], parts: dict,
                    norm) -> Tensor:
        """Rescale ``image`` (the tokens before ``norm``, with ``vectors``) by ``norm``'s per-token
        ``1 / sqrt(var + eps)``, in place, and return the vectors after ``norm``'s linear part.
        With ``y = σ base + coefᵀ z``: ``|P y|² = σ² |P base|² + 2 σ coefᵀ (P base · z) + coefᵀ (P z)(P z)ᵀ coef``,
        where ``P`` subtracts the mean; ``P base · z`` comes from the values and ``parts["cross"]``."""
        coef = image.coef
        cross = torch.empty_like(coef)  # P base[n] · z[m], (B, M, N)
        images = parts["base_norm"].shape[0]
        by_image = cross.view(images, -1, *cross.shape[1:])  # (n, P, M, N)
        row = 0
        for values, by_head, constant in zip(layer_values, parts["cross"], parts["cross_constant"]):
            by_value = self._per_image(values, by_head)  # (n, H, P, T, N)
            heads, tokens = by_value.shape[1], by_value.shape[3]
            stop = row + heads * (tokens - 1)
            torch.sub(by_value[:, :, :, 1:], by_value[:, :, :, :1],
                      out=by_image[:, :, row: stop].unflatten(2, (heads, -1)).transpose(1, 2))
            torch.add(by_value[:, :, :, 0].sum(dim=1), constant[:, None], out=by_image[:, :, stop])
            row = stop + 1
        centred = _centred(vectors)
        quadratic = (centred @ centred.transpose(1, 2) @ coef).mul_(coef).sum(dim=1)
        linear = cross.mul_(coef).sum(dim=1)
        per_prompt = lambda x: x.view(images, -1, x.shape[-1])  # noqa: E731  (B, N) -> (n, P, N)
        base_norm = parts["base_norm"][:, None]
        if image.sigma is None:
            squares = base_norm + per_prompt(2 * linear) + per_prompt(quadratic)
        else:
            squares = (per_prompt(image.sigma.square()) * base_norm + per_prompt(2 * image.sigma * linear)
                       + per_prompt(quadratic))
        scale = torch.rsqrt(squares.view_as(linear) / vectors.shape[-1] + norm.eps)
        image.sigma = scale if image.sigma is None else image.sigma * scale
        coef.mul_(scale[:, None])
        return centred.mul_(norm.weight)

    def _masks(self, image: _PromptTokens, vectors: Tensor, hyper: Tensor, parts: dict) -> Tensor:
        """Upscaling and hypernetwork product for the used grid: ``(B, 3, 4 rows, 4 cols)`` logits. Each image token
        gives its own 4x4 block of logits; they go ``MASK_PROMPTS`` prompts (as many of each image) through
        ``MASK_ROWS`` rows of tokens at a time in batched products (on 2 CPU cores within 6% of a per-prompt loop,
        1.2x faster than all rows at once; a GPU gets a few large products). The first transposed convolution's
        output then goes through LayerNorm2d, activation, the second transposed convolution, plus SAM 2.1's
        ``feat_s0`` blocks, and activation. ``parts``: the per-image upscaling terms."""
        rows, cols = self.used_grid
        (weight1, _), (weight2, bias2) = self.upscale1, self.upscale2
        upscale_base, constant, fine = parts["upscale_base"], parts["upscale_constant"], parts["upscale_fine"]
        images = upscale_base.shape[0]
        prompts = len(hyper) // images
        coef = image.coef.unflatten(2, self.grid)[..., :rows, :cols].flatten(2)  # (B, M, rows * cols)
        sigma = image.sigma.unflatten(1, self.grid)[:, :rows, :cols].flatten(1)[..., None]
        vectors = vectors @ weight1
        masks = hyper.new_empty(*hyper.shape[:2], rows * cols * 16)
        step, window = max(1, MASK_PROMPTS // images), MASK_ROWS * cols
        for start, first in itertools.product(range(0, prompts, step), range(0, rows * cols, window)):
            tokens = slice(first, first + window)
            pick = lambda x: x.view(images, prompts, *x.shape[1:])[:, start: start + step]  # noqa: E731
            x = torch.addcmul(constant[:, None, tokens], pick(sigma)[:, :, tokens], upscale_base[:, None, tokens])
            x = torch.baddbmm(x.flatten(0, 1), pick(coef)[..., tokens].flatten(0, 1).transpose(1, 2),
                              pick(vectors).flatten(0, 1))
            x = x.unflatten(2, (4, -1)).unflatten(0, (images, -1))  # (n, step, tokens, 2*2, C1)
            x = self.act1(F.layer_norm(x, x.shape[-1:], self.norm.weight, self.norm.bias, self.norm.eps))
            x = torch.addmm(bias2, x.flatten(0, -2), weight2).view(*x.shape[:-1], -1)
            if fine is not None:
                x += fine[:, None, tokens]
            x = self.act2(x)
            chosen = pick(hyper).flatten(0, 1)
            out = chosen @ x.view(len(chosen), -1, hyper.shape[-1]).transpose(1, 2)  # (n * step, 3, 16 * tokens)
            pick(masks)[..., 16 * first: 16 * (first + window)] = out.view(images, -1, *out.shape[1:])
        # (mask, token (i, j), sub-pixel (a, b, c, e)) -> pixel (4i + 2a + c, 4j + 2b + e), in two cheap steps
        masks = masks.view(*hyper.shape[:2], rows, cols, 2, 2, 2, 2).transpose(3, 4).contiguous()
        return masks.permute(0, 1, 2, 3, 6, 4, 5, 7).reshape(*hyper.shape[:2], 4 * rows, 4 * cols)


def _token_blocks(feature: Tensor, grid: tuple[int, int], levels: int) -> Tensor:
    """A map ``(n, C, s rows, s cols)`` at ``s = 2**levels`` times the token grid's resolution (cropped to the used
    ``grid``) as each token's block, in the order the upscaling's transposed convolutions write it: ``(n, rows *
    cols, 2*2 * C)`` for one level, ``(n, rows * cols, 2*2, 2*2 * C)`` for two (the first level's sub-pixel, then
    the second's and the channels)."""
    rows, cols = grid
    side = 2 ** levels
    n, channels = feature.shape[:2]
    x = feature[:, :, : side * rows, : side * cols].reshape(n, channels, rows, *[2] * levels, cols, *[2] * levels)
    row_bits, col_bits = range(3, 3 + levels), range(4 + levels, 4 + 2 * levels)
    order = [0, 2, 3 + levels, *itertools.chain(*zip(row_bits, col_bits)), 1]
    return x.permute(order).reshape(n, rows * cols, *[4] * (levels - 1), -1)


def _first(parts, images: int):
    """Every tensor of nested dicts and lists cut to its first ``images`` entries (views); None stays None."""
    if isinstance(parts, dict):
        return {key: _first(value, images) for key, value in parts.items()}
    if isinstance(parts, list):
        return [_first(value, images) for value in parts]
    return None if parts is None else parts[:images]

