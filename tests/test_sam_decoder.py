"""The shared-image SAM decoder, the banded mask resize and the predictor against segment-anything's own code."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide

from pseudolabel.sam.decoder import SharedImageMaskDecoder
from pseudolabel.sam.models import load_sam
from pseudolabel.sam.predictor import BatchedPointPredictor, MaskResize


def vit_b_decoder(seed: int = 0) -> tuple[MaskDecoder, PromptEncoder]:
    """SAM ViT-B's prompt encoder and mask decoder (the same for vit_l / vit_h) with seeded random weights."""
    torch.manual_seed(seed)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8))
    encoder = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                            mask_in_chans=16)
    with torch.no_grad():  # the output tokens are N(0, 1) by default; make the rest as large, so logits span > 1
        for name, p in decoder.named_parameters():
            if "weight" in name and p.ndim > 1:
                p.mul_(3.0)
    return decoder.eval(), encoder.eval()


def assert_close_at_scale(actual: torch.Tensor, expected: torch.Tensor, rel: float = 2e-5) -> None:
    """Float32 rounding only: the largest difference is tiny against the largest value (here up to about 30)."""
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max() <= rel * expected.abs().max()


def tiny_decoder() -> tuple[MaskDecoder, PromptEncoder]:
    model, _ = load_sam("vit_tiny_test", "random", seed=5)
    return model.mask_decoder, model.prompt_encoder


@pytest.mark.parametrize("build", [vit_b_decoder, tiny_decoder], ids=["vit_b_dims_depth2", "tiny_depth1"])
def test_shared_decoder_equals_sam_mask_decoder(build):
    decoder, prompts = build()
    side = prompts.image_embedding_size[0]
    generator = torch.Generator().manual_seed(1)
    embedding = torch.randn(1, 256, side, side, generator=generator)
    points = torch.rand(6, 1, 2, generator=generator) * prompts.input_image_size[0]
    labels = torch.ones(6, 1, dtype=torch.int64)
    with torch.no_grad():
        sparse, dense = prompts(points=(points, labels), boxes=None, masks=None)
        expected, expected_iou = decoder(embedding, prompts.get_dense_pe(), sparse, dense, multimask_output=True)
        shared = SharedImageMaskDecoder(decoder)
        shared.set_images(embedding, prompts.get_dense_pe(), dense[:1])
        masks, iou = shared(sparse)
        one_by_one = torch.cat([shared(sparse[i: i + 1])[0] for i in range(len(sparse))])
        shared.set_images(embedding, prompts.get_dense_pe(), dense[:1], used_grid=(side - 3, side - 1))
        cropped, _ = shared(sparse)
    assert expected.std() > 0.05  # not a degenerate (constant) output
    assert_close_at_scale(masks, expected)
    assert_close_at_scale(iou, expected_iou)
    assert_close_at_scale(one_by_one, masks)
    assert_close_at_scale(cropped, masks[..., : 4 * (side - 3), : 4 * (side - 1)])


def test_shared_decoder_needs_an_image():
    with pytest.raises(RuntimeError, match="set_images"):
        SharedImageMaskDecoder(tiny_decoder()[0])(torch.zeros(1, 2, 256))


@pytest.mark.parametrize("size", [(375, 500), (500, 375), (333, 500), (50, 70), (1, 9), (1024, 1024)])
@pytest.mark.parametrize("canvas", [1024, 256])
def test_mask_resize_equals_sam_postprocess_masks(size, canvas):
    input_size = ResizeLongestSide.get_preprocess_shape(*size, canvas)
    low = canvas // 4
    logits = torch.randn(2, 3, low, low, generator=torch.Generator().manual_seed(0))
    sam = SimpleNamespace(image_encoder=SimpleNamespace(img_size=canvas))
    expected = Sam.postprocess_masks(sam, logits, input_size, size)
    resize = MaskResize(low, canvas, input_size, size)
    rows, cols = resize.used
    assert rows <= low and cols <= low
    beyond = logits.clone()
    beyond[..., rows:, :] = beyond[..., :, cols:] = float("nan")  # what the resize must not read
    out = resize(beyond[..., :rows, :cols])
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # `used` is tight: the last used row and column carry weight
    assert resize.row_matrix.to_dense()[:, rows - 1].ne(0).any()
    assert resize.col_matrix_t.to_dense()[cols - 1].ne(0).any()


@pytest.mark.parametrize("size", [(375, 500), (61, 37), (1, 9)])
def test_mask_resize_of_the_whole_canvas_equals_one_bilinear_resize(size):
    """SAM 2.1's ``postprocess_masks``: the low-resolution logits bilinearly to the image size."""
    logits = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    expected = torch.nn.functional.interpolate(logits, size, mode="bilinear", align_corners=False)
    resize = MaskResize(256, 256, (256, 256), size)
    rows, cols = resize.used
    torch.testing.assert_close(resize(logits[..., :rows, :cols]), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])])
@pytest.mark.parametrize("shape", [(50, 70), (70, 50)])
def test_batched_point_predictor_matches_sam_predictor(shape, device):
    on_cpu = device == "cpu"
    model, _ = load_sam("vit_tiny_test", "random", device, seed=3)
    image = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    reference = SamPredictor(model)
    reference.set_image(image)
    xy = torch.from_numpy(np.random.default_rng(1).random((8, 1, 2)) * [shape[1], shape[0]]).float()
    labels = torch.ones(8, 1, dtype=torch.int64, device=device)
    logits, expected_iou, _ = reference.predict_torch(reference.transform.apply_coords_torch(xy.to(device), shape),
                                                      labels, return_logits=True)

    def predict(predictor: BatchedPointPredictor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.from_numpy(predictor.transform.apply_image(image).transpose(2, 0, 1).copy())
        predictor.set_batch([predictor.encode([pixels])], [tuple(pixels.shape[-2:])], [shape])
        masks, iou = predictor.predict_points(xy.view(1, 8, 2))
        return masks[0], iou[0]

    # on a GPU, the default: all prompts in one step
    masks, iou = predict(BatchedPointPredictor(model, prompts_per_substep=3 if on_cpu else None))
    assert masks.dtype == torch.bool and masks.shape == logits.shape
    # logits here are about 0.1; their float32 rounding differs by about 1e-7 on a CPU, more with a GPU's TF32 and
    # kernel order
    margin, share, iou_tolerance = (1e-5, 0.999, dict(rtol=1e-4, atol=1e-6)) if on_cpu else (
        1e-4, 0.99, dict(rtol=1e-3, atol=1e-4))
    clear = logits.abs() > margin
    assert torch.equal(masks[clear], logits[clear] > 0) and clear.float().mean() > share
    torch.testing.assert_close(iou, expected_iou, **iou_tolerance)
    # step sizes and worker threads change nothing
    for steps, threads in [(1, 1), (1, 2), (5, 2), (8, 1)] if on_cpu else [(3, 1)]:
        assert torch.equal(predict(BatchedPointPredictor(model, prompts_per_substep=steps, threads=threads))[0], masks)


@pytest.mark.parametrize("upscaling", [(32, 16), (3, 5)], ids=["default", "steps_of_1_prompt_5_rows"])
def test_shared_decoder_on_several_images_equals_one_image_at_a_time(upscaling, monkeypatch):
    """Prompts of three images decoded together (and of the first two: the images a step uses are a prefix) against
    each image alone, with the upscaling in its default pieces and in the smallest."""
    from pseudolabel.sam import decoder as decoder_module

    monkeypatch.setattr(decoder_module, "MASK_PROMPTS", upscaling[0])
    monkeypatch.setattr(decoder_module, "MASK_ROWS", upscaling[1])
    decoder, prompts = vit_b_decoder()
    generator = torch.Generator().manual_seed(2)
    embeddings = torch.randn(3, 256, 64, 64, generator=generator)
    points = torch.rand(12, 1, 2, generator=generator) * 1024
    with torch.no_grad():
        sparse, dense = prompts(points=(points, torch.ones(12, 1, dtype=torch.int64)), boxes=None, masks=None)
        single = SharedImageMaskDecoder(decoder)
        alone = []
        for i in range(3):
            single.set_images(embeddings[i: i + 1], prompts.get_dense_pe(), dense[:1], used_grid=(48, 64))
            alone.append(single(sparse[4 * i: 4 * i + 4]))
        masks, iou = torch.cat([m for m, _ in alone]), torch.cat([i for _, i in alone])
        shared = SharedImageMaskDecoder(decoder)
        shared.set_images(embeddings, prompts.get_dense_pe(), dense[:1], used_grid=(48, 64))
        together, together_iou = shared(sparse, images=3)
        assert_close_at_scale(together, masks)
        assert_close_at_scale(together_iou, iou)
        first_two, _ = shared(sparse[:8], images=2)
        assert_close_at_scale(first_two, masks[:8])
        with pytest.raises(ValueError, match="split evenly"):
            shared(sparse[:7], images=2)


def sam2_decoder(seed: int = 0, sam2_1: bool = True):
    """SAM 2.1's mask decoder (object-score token, high-resolution maps, sigmoid IoUs) as the sam2 package builds it
    for every Hiera size, with seeded random weights (scaled as :func:`vit_b_decoder`'s), and its prompt encoder;
    ``sam2_1=False``: the same decoder without those three."""
    from sam2.modeling.sam.mask_decoder import MaskDecoder as SAM2MaskDecoder
    from sam2.modeling.sam.prompt_encoder import PromptEncoder as SAM2PromptEncoder
    from sam2.modeling.sam.transformer import TwoWayTransformer as SAM2TwoWayTransformer

    torch.manual_seed(seed)
    decoder = SAM2MaskDecoder(
        num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        transformer=SAM2TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        use_high_res_features=sam2_1, iou_prediction_use_sigmoid=sam2_1, pred_obj_scores=sam2_1,
        pred_obj_scores_mlp=sam2_1, use_multimask_token_for_obj_ptr=sam2_1)
    encoder = SAM2PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                mask_in_chans=16)
    with torch.no_grad():
        for name, p in decoder.named_parameters():
            if "weight" in name and p.ndim > 1:
                p.mul_(3.0)
    return decoder.eval(), encoder.eval()


def sam2_inputs(images: int, prompts: int, dtype=torch.float32):
    """Random image embeddings ``(n, 256, 64, 64)``, high-resolution maps ``[(n, 32, 256, 256), (n, 64, 128,
    128)]`` (as the decoder's conv_s0 / conv_s1 return them) and points on a 1024 canvas."""
    generator = torch.Generator().manual_seed(4)
    embeddings = torch.randn(images, 256, 64, 64, generator=generator, dtype=dtype)
    high_res = [torch.randn(images, 32, 256, 256, generator=generator, dtype=dtype),
                torch.randn(images, 64, 128, 128, generator=generator, dtype=dtype)]
    points = torch.rand(images * prompts, 1, 2, generator=generator) * 1024
    return embeddings, high_res, points


def stock_sam2_decode(decoder, pe, embedding, high_res, sparse, dense):
    """The sam2 package's decoder on one image, all prompts in one call, as ``SAM2ImagePredictor`` calls it."""
    masks, iou, _, _ = decoder(image_embeddings=embedding, image_pe=pe,
                               sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
                               repeat_image=True, high_res_features=high_res)
    return masks, iou


@pytest.mark.parametrize("sam2_1, dtype, rel", [(True, torch.float32, 2e-5), (True, torch.float64, 1e-12),
                                                (False, torch.float32, 2e-5)],
                         ids=["sam2.1-fp32", "sam2.1-fp64", "no_high_res_no_score_token-fp32"])
def test_shared_decoder_equals_sam2_mask_decoder(sam2_1, dtype, rel):
    """The factored decoder on SAM 2.1's MaskDecoder: the masks and IoUs of the sam2 package's own decoder, in
    float32 up to rounding (2e-5 of the largest logit) and in float64 to 1e-12, all prompts at once and one by one,
    and with a cropped grid (which crops the high-resolution maps with it)."""
    decoder, prompts = sam2_decoder(sam2_1=sam2_1)
    decoder = decoder.to(dtype)
    embeddings, high_res, points = sam2_inputs(1, 4, dtype)
    high_res = high_res if sam2_1 else None
    with torch.no_grad():  # the prompt encoder computes in float32 (sam2's point encoding does)
        sparse, dense = (x.to(dtype) for x in prompts(points=(points, torch.ones(4, 1, dtype=torch.int)), boxes=None,
                                                       masks=None))
        dense = dense[:1]  # the "no mask" embedding, the same for every prompt
        pe = prompts.get_dense_pe().to(dtype)
        expected, expected_iou = stock_sam2_decode(decoder, pe, embeddings, high_res, sparse, dense)
        shared = SharedImageMaskDecoder(decoder)
        shared.set_images(embeddings, pe, dense, high_res_features=high_res)
        masks, iou = shared(sparse)
        one_by_one = torch.cat([shared(sparse[i: i + 1])[0] for i in range(len(sparse))])
        shared.set_images(embeddings, pe, dense, used_grid=(61, 63), high_res_features=high_res)
        cropped, _ = shared(sparse)
    assert masks.dtype == dtype and expected.std() > 0.05
    assert_close_at_scale(masks, expected, rel)
    assert_close_at_scale(iou, expected_iou, rel)
    assert_close_at_scale(one_by_one, expected, rel)
    assert_close_at_scale(cropped, expected[..., : 4 * 61, : 4 * 63], rel)
    if sam2_1:  # the maps matter: without them (zeros) the masks differ
        shared.set_images(embeddings, pe, dense, high_res_features=[torch.zeros_like(m) for m in high_res])
        assert (shared(sparse)[0] - expected).abs().max() > 0.1 * expected.abs().max()
    with pytest.raises(ValueError, match="high_res_features"):
        shared.set_images(embeddings, pe, dense, high_res_features=None if sam2_1 else [])


def test_shared_sam2_decoder_on_several_images_equals_the_stock_decoder_image_by_image():
    """Prompts of two images decoded together against the sam2 package's decoder per image."""
    decoder, prompts = sam2_decoder(seed=1)
    embeddings, high_res, points = sam2_inputs(2, 3)
    with torch.no_grad():
        sparse, dense = prompts(points=(points, torch.ones(6, 1, dtype=torch.int)), boxes=None, masks=None)
        dense, pe = dense[:1], prompts.get_dense_pe()
        expected = [stock_sam2_decode(decoder, pe, embeddings[i: i + 1], [m[i: i + 1] for m in high_res],
                                      sparse[3 * i: 3 * i + 3], dense) for i in range(2)]
        shared = SharedImageMaskDecoder(decoder)
        shared.set_images(embeddings, pe, dense, high_res_features=high_res)
        masks, iou = shared(sparse, images=2)
        assert_close_at_scale(masks, torch.cat([m for m, _ in expected]))
        assert_close_at_scale(iou, torch.cat([i for _, i in expected]))
