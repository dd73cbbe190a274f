"""Stage one on a GPU (skipped without one; bench/gpu_check.sh runs them): the real ViT-B/16 and SAM ViT-B
architectures with random weights on synthetic VOC-sized images. Labels of a batch's images labelled together against
each image labelled alone, the overlapped CUDA streams against synchronised stages, the batched SAM encoder and the
decoding of several images' prompts together against segment-anything's SamPredictor, PAR of several images against
each alone, the host waits of the batched step, and the GPU against the CPU."""
import warnings

import numpy as np
import pytest
import torch

from pseudolabel.classes import CLASSES_DIR
from pseudolabel.datasets import build_dataset
from pseudolabel.pipeline import Labeller, Setting

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from tests.fixtures.tiny_datasets import make_voc_sized

    images, labels = make_voc_sized(tmp_path_factory.mktemp("voc_sized"), 10, seed=1)
    return build_dataset("custom", images, None, labels=labels, classes=CLASSES_DIR / "voc.json")


@pytest.fixture(scope="module")
def models(dataset):
    from pseudolabel.cam.skipcam import SkipCAM, SkipCAMConfig
    from pseudolabel.sam.refine import SAMRefineConfig, SAMRefiner

    cam = SkipCAM.from_config(SkipCAMConfig(clip_weights="random"), dataset.class_set, "cuda", "fp32")
    refiner = SAMRefiner.from_config(SAMRefineConfig(sam_checkpoint="random"), "cuda", precision="fp32")
    return cam, refiner


def label_all(cam, refiner, samples, batch_size, device="cuda", timed=False):
    records = Labeller([Setting(cam, refiner)], device, timed=timed).label_all(samples, batch_size, workers=4)
    return {r.image_id: r for [r] in records}


def agreement(a: dict, b: dict, field: str) -> float:
    assert a.keys() == b.keys()
    same = sum(int((getattr(a[i], field) == getattr(b[i], field)).sum()) for i in a)
    return same / sum(getattr(a[i], field).size for i in a)


def test_fp32_batched_labels_agree_with_unbatched(dataset, models):
    """A batch's images labelled together (batches of 4 and 2) against each image labelled alone (batch size 1): the
    same labels up to the rounding of fp32 kernels."""
    samples = list(dataset)
    unbatched = label_all(*models, samples, 1)
    for batch_size in (4, 2):
        batched = label_all(*models, samples, batch_size)
        assert agreement(batched, unbatched, "refined") >= 0.999
        assert agreement(batched, unbatched, "initial") >= 0.999
        for image_id in batched:
            np.testing.assert_allclose(batched[image_id].loc_maps_lowres, unbatched[image_id].loc_maps_lowres,
                                       atol=1e-3)
            assert batched[image_id].class_stats.prompts == unbatched[image_id].class_stats.prompts


def test_overlapped_streams_equal_synchronised_stages(dataset, models):
    """The batch step on its stream, one batch ahead of the per-image step on another, against every stage waited
    for: any missing synchronisation between the streams would show as differing labels."""
    samples = list(dataset)
    overlapped, synchronised = label_all(*models, samples, 4), label_all(*models, samples, 4, timed=True)
    assert agreement(overlapped, synchronised, "refined") >= 0.9999
    assert agreement(overlapped, synchronised, "initial") >= 0.9999


def test_batched_encoder_and_decoder_match_sam_predictor(dataset, models, monkeypatch):
    """Embeddings of three images encoded together, and the masks our decoder gives from them, against
    segment-anything's SamPredictor on each image alone (its encoder, decoder and postprocess_masks)."""
    from segment_anything import SamPredictor

    from pseudolabel.image_io import read_rgb

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # both sides in plain fp32
    cam, refiner = models
    images = [read_rgb(s.image_path) for s in list(dataset)[:3]]
    embeddings = refiner.embed(images)  # one encoder pass for the three
    library, ours = SamPredictor(refiner.predictor.model), refiner.predictor
    for image, embedding in zip(images, embeddings):
        library.set_image(image)
        assert (embedding.features - library.features).abs().max() <= 1e-3 * library.features.abs().max()
        ours.set_batch([embedding.features], [embedding.input_size], [embedding.original_size])
        xy = torch.from_numpy(np.random.default_rng(0).random((16, 1, 2)) * image.shape[1::-1]).float()
        coords = library.transform.apply_coords_torch(xy.cuda(), image.shape[:2])
        labels = torch.ones(16, 1, dtype=torch.int64, device="cuda")
        logits, expected_iou, _ = library.predict_torch(coords, labels, return_logits=True)
        masks, iou = (x[0] for x in ours.predict_points(xy.view(1, 16, 2)))
        clear = logits.abs() > 1e-2 * logits.abs().max()  # away from the threshold by more than rounding moves it
        assert torch.equal(masks[clear], logits[clear] > 0) and clear.float().mean() > 0.5
        torch.testing.assert_close(iou, expected_iou, rtol=1e-2, atol=1e-3)
    # the three images' prompts decoded together, their masks on one canvas
    sizes = [image.shape[:2] for image in images]
    ours.set_batch([e.features for e in embeddings], [e.input_size for e in embeddings], sizes)
    xy = torch.from_numpy(np.random.default_rng(1).random((3, 16, 2))).float() * torch.tensor(
        [[[w, h]] for h, w in sizes]).float()
    masks, iou = ours.predict_points(xy)
    for i, (image, size) in enumerate(zip(images, sizes)):
        library.set_image(image)
        coords = library.transform.apply_coords_torch(xy[i].cuda()[:, None], size)
        logits, expected_iou, _ = library.predict_torch(coords, torch.ones(16, 1, dtype=torch.int64, device="cuda"),
                                                        return_logits=True)
        clear = logits.abs() > 1e-2 * logits.abs().max()
        own = masks[i, :, :, : size[0], : size[1]]
        assert torch.equal(own[clear], logits[clear] > 0) and clear.float().mean() > 0.5
        assert not masks[i, :, :, size[0]:].any() and not masks[i, :, :, :, size[1]:].any()
        torch.testing.assert_close(iou[i], expected_iou, rtol=1e-2, atol=1e-3)


def test_par_of_several_images_equals_par_of_each():
    from pseudolabel.cam.par import par_refine

    generator = torch.Generator(device="cuda").manual_seed(0)
    sizes, channels = [(240, 320), (320, 240), (213, 320), (1, 40)], [2, 4, 3, 2]
    images = [torch.rand(3, *s, device="cuda", generator=generator) * 255 for s in sizes]
    scores = [torch.rand(k, *s, device="cuda", generator=generator) for k, s in zip(channels, sizes)]
    for image, score, together in zip(images, scores, par_refine(images, scores)):
        torch.testing.assert_close(together, par_refine([image], [score])[0], rtol=1e-4, atol=1e-5)


def test_the_batched_step_waits_for_the_gpu_twice(dataset, models):
    """Once warm, the batched labelling step makes the host wait for the GPU only for its two host copies (CAA's
    CAMs for OpenCV, Y0 at the grid points for SAM's prompts): every other transfer is asynchronous and no operator
    reads a result back (CUDA's sync debug mode reports each wait)."""
    cam, refiner = models
    labeller = Labeller([Setting(cam, refiner)], "cuda")
    prepared = [labeller.prepare(s) for s in list(dataset)[:8]]
    encoded = labeller.encode(prepared)
    labeller.label_batch(prepared, encoded)  # caches: mask resizes of these sizes
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            pending = labeller.label_batch(prepared, encoded)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    waits = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    assert len(waits) == 2, waits
    assert all(np.array_equal(p.result().refined, q.result().refined)
               for p, q in zip(pending, labeller.label_batch(prepared, encoded)))


def test_the_gpu_path_agrees_with_the_cpu_path():
    """Tiny models (same weights on both devices): the same Skip-CAM path and the GPU's batched mask upscaling and
    filtering/merging on the device against the CPU's path."""
    from pseudolabel.classes import get_class_set
    from pseudolabel.cam.skipcam import SkipCAM, SkipCAMConfig
    from pseudolabel.sam.refine import SAMRefineConfig, SAMRefiner
    from tests.fixtures.tiny_datasets import make_voc_sized

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        images, labels = make_voc_sized(tmp, 5, seed=2)
        samples = list(build_dataset("custom", images, None, labels=labels, classes=CLASSES_DIR / "voc.json"))
        results = {}
        for device in ("cpu", "cuda"):
            cfg = SkipCAMConfig(clip_model="ViT-T-16-cep-test", clip_weights="random")
            cam = SkipCAM.from_config(cfg, get_class_set("voc"), device)
            refiner = SAMRefiner.from_config(SAMRefineConfig(sam_model="vit_tiny_test", sam_checkpoint="random"),
                                             device)
            results[device] = label_all(cam, refiner, samples, 4, device=device)
    assert agreement(results["cuda"], results["cpu"], "initial") >= 0.99
    assert agreement(results["cuda"], results["cpu"], "refined") >= 0.97
