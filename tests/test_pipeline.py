"""The batched labelling pipeline on a CPU: labels and shards independent of --batch-size, failures isolated per image
and retried once by a rerun, a kill -9 mid-batch, Ctrl-C, precision in the stored configuration."""
import filecmp
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from pseudolabel.cam.skipcam import SkipCAM
from pseudolabel.exits import OutputError
from pseudolabel.generate import main, run
from pseudolabel.pipeline import Labeller, Setting, failure_reason
from pseudolabel.precision import DEFAULT_CUDA_PRECISION, effective_precision
from pseudolabel.sam.refine import SAMRefiner
from pseudolabel.storage.run_store import RunStore
from pseudolabel.storage.shards import open_shards, shard_image_ids
from tests.fixtures.outputs import assert_same_labels, stored_labels
from tests.fixtures.tiny_datasets import make_voc
from tests.fixtures.tiny_models import REPO, module_command
from tests.test_generate import args_for

SIZES = {0: (40, 56), 1: (56, 40), 2: (40, 56), 3: (33, 47), 4: (40, 56), 5: (48, 64), 6: (56, 40)}


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """Seven images of four sizes (so a batch holds several CAM input sizes)."""
    root = make_voc(tmp_path_factory.mktemp("data"), n_train=7, n_val=1, size=(40, 56))
    rng = np.random.default_rng(4)
    for index, size in SIZES.items():
        path = root / "JPEGImages" / f"2007_{index:06d}.jpg"
        Image.open(path).resize(size[::-1]).save(path)
        if index % 2:  # some texture, so the images differ beyond their rectangles
            pixels = np.asarray(Image.open(path)).astype(int) + rng.integers(-20, 20, (*size, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return root


@pytest.fixture(scope="module")
def unbatched(voc, tmp_path_factory):
    out = tmp_path_factory.mktemp("b1")
    return out, run(args_for(voc, out, "--batch-size", "1", "--shard-size", "3"))


def test_batch_size_4_gives_byte_identical_shards(voc, unbatched, tmp_path):
    out1, summary1 = unbatched
    summary4 = run(args_for(voc, tmp_path, "--batch-size", "4", "--shard-size", "3"))
    assert summary1["images"] == summary4["images"] == 7 and summary4["batch_size"] == 4
    names = sorted(p.name for p in out1.glob("shard-*.h5"))
    assert names == sorted(p.name for p in tmp_path.glob("shard-*.h5")) and len(names) == 3
    for name in names:
        assert filecmp.cmp(out1 / name, tmp_path / name, shallow=False), name
    manifest = lambda out: json.loads((out / "manifest.json").read_text())["shards"]  # noqa: E731
    assert manifest(out1) == manifest(tmp_path)


def test_staged_api_equals_the_one_call_api(voc):
    from tests.fixtures.tiny_clip import tiny_skipcam
    from pseudolabel.sam.models import load_sam
    from pseudolabel.sam.predictor import BatchedPointPredictor
    from pseudolabel.sam.refine import SAMRefineConfig
    from tests.fixtures.fake_sam import refine_one

    cam = tiny_skipcam()
    refiner = SAMRefiner(BatchedPointPredictor(load_sam("vit_tiny_test", "random", seed=2)[0]),
                         SAMRefineConfig(delta=0.2))
    images = [np.asarray(Image.open(voc / "JPEGImages" / f"2007_{i:06d}.jpg")) for i in (0, 1, 3)]
    classes = [(3,), (5, 9), (12, 15)]
    staged = cam.label_batch(images, cam.frozen([cam.preprocess(i) for i in images]), classes).outputs()
    embeddings = refiner.embed(images)
    for image, cls, out, embedding in zip(images, classes, staged, embeddings):
        single = cam(image, cls)
        for field in ("loc_maps_lowres", "scores", "y0"):
            assert np.array_equal(getattr(out, field), getattr(single, field))
        staged_refinement = refiner.refine_embedded(embedding, out.label, out.score_maps, cls)
        refinement = refine_one(refiner, single.y0, single.scores, cls, image=image)
        assert np.array_equal(staged_refinement.labels, refinement.labels)
        assert staged_refinement.prompts == refinement.prompts and sum(refinement.prompts) > 0
        assert staged_refinement.masks_accepted == refinement.masks_accepted


def test_a_failing_image_is_recorded_and_the_batch_goes_on(voc, unbatched, tmp_path, monkeypatch):
    """A batched step that fails is retried image by image; an image that fails alone (an out-of-memory error in
    the batch step, a CPU allocation failure in its own step) is listed with its reason and the others are labelled
    exactly as without the failure."""
    frozen, refine = SkipCAM.frozen, SAMRefiner.refine_batch
    calls = Counter()

    def failing_frozen(self, pixels):
        calls[len(pixels)] += 1
        if any(tuple(p.shape[-2:]) == (48, 48) for p in pixels):  # image 3 (33x47) at the CAM input size
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return frozen(self, pixels)

    def failing_refine(self, embeddings, *args):
        if any(embedding.original_size == (48, 64) for embedding in embeddings):  # image 5
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 421884000048 bytes")
        return refine(self, embeddings, *args)

    monkeypatch.setattr(SkipCAM, "frozen", failing_frozen)
    monkeypatch.setattr(SAMRefiner, "refine_batch", failing_refine)
    out = tmp_path / "out"
    summary = run(args_for(voc, out, "--batch-size", "4"))
    assert summary["images"] == 5 and summary["failures"] == 2
    failures = {f["image_id"]: f for f in open_shards(out).failures}
    assert set(failures) == {"2007_000003", "2007_000005"}
    assert failures["2007_000003"]["stage"] == "label" and "OutOfMemoryError" in failures["2007_000003"]["reason"]
    assert "--batch-size" in failures["2007_000003"]["reason"] and failures["2007_000005"]["attempts"] == 1
    assert "can't allocate memory" in failures["2007_000005"]["reason"]
    expected, got = stored_labels(unbatched[0]), stored_labels(out)
    assert set(got) == set(expected) - set(failures)
    assert_same_labels(expected, got, got)

    # a rerun retries both once, alone; image 3 fails again (its reason kept), image 5 now works
    monkeypatch.setattr(SAMRefiner, "refine_batch", refine)
    calls.clear()
    summary = run(args_for(voc, out, "--batch-size", "4"))
    assert summary["images"] == 1 and summary["already_done"] == 5 and summary["failures"] == 1
    assert calls == {1: 2}  # image 5 alone; image 3 alone, once
    (again,) = open_shards(out).failures
    assert again["image_id"] == "2007_000003" and again["attempts"] == 2
    assert again["reason"] == failures["2007_000003"]["reason"]
    monkeypatch.setattr(SkipCAM, "frozen", frozen)
    run(args_for(voc, out, "--batch-size", "4"))
    assert open_shards(out).failures == [] and len(open_shards(out)) == 7
    assert_same_labels(expected, stored_labels(out))


def test_failure_reasons_are_one_line_with_a_hint_for_memory():
    assert failure_reason(ValueError("bad\nsecond line")) == "ValueError: bad"
    assert "--batch-size" in failure_reason(MemoryError())


def test_lost_gpu_context_stops_the_run(voc, tmp_path, monkeypatch):
    def broken(self, items, encoded, *rest):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(Labeller, "label_batch", broken)
    assert main(args_for(voc, tmp_path, "--batch-size", "2")) == 2


def test_ctrl_c_propagates_at_once_and_keeps_finished_images(voc, tmp_path, monkeypatch):
    label, seen = Labeller.label_batch, []

    def interrupted(self, items, encoded, *rest):
        seen.extend(item.sample.image_id for item in items)
        if len(seen) > 2:   # the second batch
            raise KeyboardInterrupt
        return label(self, items, encoded, *rest)

    monkeypatch.setattr(Labeller, "label_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(args_for(voc, tmp_path, "--batch-size", "2", "--shard-size", "100"))
    assert len(list((tmp_path / ".staging").rglob("*.npz"))) == 2  # the two finished images are staged
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t.name.startswith(("prepare", "shard-writer"))]


def test_a_writer_error_stops_the_run_with_its_message(voc, tmp_path, monkeypatch, capsys):
    def full(self, record):
        raise OutputError(f"cannot write to '{self.staging}': the disk is full")

    monkeypatch.setattr(RunStore, "stage", full)
    assert main(args_for(voc, tmp_path, "--batch-size", "2")) == 2
    assert "the disk is full" in capsys.readouterr().err


def test_kill_9_in_the_middle_of_a_batch_loses_and_duplicates_nothing(voc, unbatched, tmp_path):
    out = tmp_path / "killed"
    cmd = module_command("pseudolabel.generate", *args_for(voc, out, "--batch-size", "7", "--shard-size", "3"))
    proc = subprocess.Popen(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    staged = lambda: list(out.glob(".staging/r000/*.npz"))  # noqa: E731
    deadline = time.time() + 180
    while time.time() < deadline and not staged() and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(staged()) + sum(len(shard_image_ids(p)) for p in out.glob("shard-*.h5"))
    assert 1 <= finished < 7  # killed within the one batch of 7
    summary = run(args_for(voc, out, "--batch-size", "7", "--shard-size", "3"))
    assert summary["already_done"] >= finished and summary["already_done"] + summary["images"] == 7
    in_shards = Counter(i for p in out.glob("shard-*.h5") for i in shard_image_ids(p))
    assert set(in_shards.values()) == {1} and len(in_shards) == 7
    assert_same_labels(stored_labels(unbatched[0]), stored_labels(out))


def test_precision_is_stored_and_compared_on_resume(voc, tmp_path, caplog):
    assert effective_precision("bf16", "cpu")[0] == "fp32" and "CPU" in effective_precision("bf16", "cpu")[1]
    assert effective_precision(None, "cuda") == (DEFAULT_CUDA_PRECISION, None)
    assert effective_precision("fp32", "cuda:1") == ("fp32", None)
    with caplog.at_level("INFO"):
        run(args_for(voc, tmp_path, "--limit", "1", "--precision", "bf16"))
    assert "the CPU computes in fp32" in caplog.text
    assert open_shards(tmp_path).attrs["config"]["precision"] == "fp32"
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, precision="bf16")))  # as a GPU run records it
    assert main(args_for(voc, tmp_path, "--limit", "2")) == 2


def tiny_models(**cam_options):
    from tests.fixtures.tiny_clip import tiny_skipcam
    from pseudolabel.sam.models import load_sam
    from pseudolabel.sam.predictor import BatchedPointPredictor
    from pseudolabel.sam.refine import SAMRefineConfig

    cam = tiny_skipcam(**cam_options)
    return cam, SAMRefiner(BatchedPointPredictor(load_sam("vit_tiny_test", "random", seed=2)[0]),
                           SAMRefineConfig(delta=0.2, grid_size=8))


def label_together(labeller: Labeller, samples: list) -> list:
    """The samples' records from one labelling step of all of them (what a GPU runs on a batch; the pipeline on a
    CPU labels each image alone)."""
    prepared = [labeller.prepare(s) for s in samples]
    pending = labeller.label_batch(prepared, labeller.encode(prepared))
    assert {type(p).__name__ for p in pending} == {"PendingRecord"}
    return [p.result() for p in pending]


def test_batched_labelling_equals_image_by_image(voc):
    """A batch's images labelled together (Skip-CAM, SAM decoding, filter and merge) against each image labelled
    alone (batch size 1): identical labels, Y0 and per-class records, maps equal up to
    float rounding; as deferred records (what the shard writer resolves) too."""
    from pseudolabel.datasets import build_dataset

    samples = list(build_dataset("voc", voc, "train"))
    cam, refiner = tiny_models()
    labeller = Labeller([Setting(cam, refiner)], "cpu")
    alone = {r.image_id: r for [r] in labeller.label_all(samples, 1, 2)}
    together = {r.image_id: r for r in label_together(labeller, samples)}
    assert together.keys() == alone.keys() and len(alone) == 7
    for image_id, a in alone.items():
        b = together[image_id]
        assert np.array_equal(a.refined, b.refined) and np.array_equal(a.initial, b.initial), image_id
        np.testing.assert_allclose(b.loc_maps_lowres, a.loc_maps_lowres, atol=2e-6)
        assert a.class_stats == b.class_stats and a.size == b.size and a.loc_class_ids == b.loc_class_ids
    assert sum(r.class_stats.changed_pixels for r in alone.values()) > 0  # SAM changed labels


def test_decoded_masks_are_kept_only_when_several_settings_refine(voc, monkeypatch):
    """A labelling step keeps SAM's decoded masks for later settings (a MaskCache) only when more than one setting
    refines: a refining setting beside a no-refine one holds no masks."""
    import pseudolabel.pipeline as pipeline
    from pseudolabel.datasets import build_dataset
    from pseudolabel.sam.refine import MaskCache

    made = []

    class CountedCache(MaskCache):
        def __init__(self):
            super().__init__()
            made.append(self)

    monkeypatch.setattr(pipeline, "MaskCache", CountedCache)
    samples = list(build_dataset("voc", voc, "train"))[:2]
    cam, refiner = tiny_models()
    list(Labeller([Setting(cam, refiner), Setting(cam, None)], "cpu").label_all(samples, 1, 1))
    assert not made
    list(Labeller([Setting(cam, refiner), Setting(cam, refiner)], "cpu").label_all(samples, 1, 1))
    assert len(made) == len(samples) and any(cache.steps for cache in made)


def test_settings_differing_only_in_attention_blocks_share_the_clip_input(voc, monkeypatch):
    """Two Skip-CAMs on one model that differ only in --attn-blocks: one CLIP preprocessing per image (their frozen
    blocks differ, so each runs its own), and each setting's labels are its own Labeller's."""
    from pseudolabel.datasets import build_dataset
    from tests.fixtures.tiny_clip import tiny_skipcam

    samples = list(build_dataset("voc", voc, "train"))[:2]
    few, more = tiny_skipcam(attn_blocks=1), tiny_skipcam(attn_blocks=2)
    calls = Counter()
    for cam in (few, more):
        monkeypatch.setattr(cam, "preprocess", lambda image, cam=cam, run=cam.preprocess: calls.update([id(cam)])
                            or run(image))
    together = list(Labeller([Setting(few, None), Setting(more, None)], "cpu").label_all(samples, 1, 1))
    assert sum(calls.values()) == len(samples)
    for index, cam in enumerate((few, more)):
        alone = [r for [r] in Labeller([Setting(cam, None)], "cpu").label_all(samples, 1, 1)]
        assert [np.array_equal(a.initial, t[index].initial) for a, t in zip(alone, together)] == [True, True]


def test_the_token_budget_holds_in_the_batched_step(voc):
    """--max-tokens below every image's token grid (6 against 9-12): the batched Skip-CAM step runs on the
    scaled-down CAM inputs as each image alone does, with the same Y0 and maps, and Y0 at full size."""
    from pseudolabel.datasets import build_dataset

    samples = list(build_dataset("voc", voc, "train"))
    cam, _ = tiny_models(max_tokens=6)
    alone = {r.image_id: r for [r] in Labeller([Setting(cam, None)], "cpu").label_all(samples, 1, 2)}
    together = {r.image_id: r for r in label_together(Labeller([Setting(cam, None)], "cpu"), samples)}
    assert together.keys() == alone.keys() and len(alone) == 7
    for image_id, a in alone.items():
        b = together[image_id]
        assert np.array_equal(a.initial, b.initial) and b.initial.shape == SIZES[int(image_id[-1])], image_id
        np.testing.assert_allclose(b.loc_maps_lowres, a.loc_maps_lowres, atol=2e-6)
        assert np.prod(b.loc_maps_lowres.shape[1:]) <= 6


def test_a_failing_batched_step_is_labelled_image_by_image(voc, monkeypatch):
    """The batched labelling step fails (running out of memory): its images are labelled one by one, the same."""
    from pseudolabel.datasets import build_dataset

    samples = list(build_dataset("voc", voc, "train"))[:3]
    cam, refiner = tiny_models()
    expected = {r.image_id: r.refined for [r] in Labeller([Setting(cam, refiner)], "cpu").label_all(samples, 1, 1)}

    def out_of_memory(self, embeddings, *args, refine_batch=SAMRefiner.refine_batch):
        if len(embeddings) > 1:  # the batch's images together; one image alone fits
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return refine_batch(self, embeddings, *args)
    monkeypatch.setattr(SAMRefiner, "refine_batch", out_of_memory)
    labeller = Labeller([Setting(cam, refiner)], "cpu")
    labeller.together = True   # as on a GPU
    records = [r for [r] in labeller.label_all(samples, 3, 1)]
    assert all(np.array_equal(expected[r.image_id], r.refined) for r in records) and len(records) == 3


class DataDependentOps:
    """Counts the operators whose result size or value the host must read (``.item()``, ``nonzero``, boolean-mask
    indexing, ``repeat_interleave`` without ``output_size``...): on a GPU each makes the host wait for the device."""

    NAMES = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique2", "aten::equal",
             "aten::is_nonzero"}

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        seen = self.seen = Counter()

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name, kwargs = func._schema.name, kwargs or {}
                masks = name in ("aten::index", "aten::index_put_", "aten::_index_put_impl_") and any(
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)
                sized = name == "aten::repeat_interleave" and len(args) > 1 and isinstance(args[1], torch.Tensor) \
                    and kwargs.get("output_size") is None
                if name in DataDependentOps.NAMES or masks or sized:
                    seen[name] += 1
                return func(*args, **kwargs)
        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def test_the_batched_step_reads_nothing_back_but_its_two_host_copies(voc):
    """The labelling step (warm: its caches filled) uses no operator whose result the host must wait for, for a
    batch or an image alone; its only waits are the two host copies (CAA's CAMs, Y0 at the grid points)."""
    from pseudolabel.datasets import build_dataset

    cam, refiner = tiny_models()
    labeller = Labeller([Setting(cam, refiner)], "cpu")
    prepared = [labeller.prepare(s) for s in list(build_dataset("voc", voc, "train"))[:4]]
    encoded = labeller.encode(prepared)
    labeller.label_batch(prepared, encoded)
    with DataDependentOps() as batched:
        labeller.label_batch(prepared, encoded)
    assert batched.seen == {}
    with DataDependentOps() as alone:
        labeller.label_batch(prepared[:1], encoded[:1])
    assert alone.seen == {}  # the one path: an image alone waits for nothing either
    with DataDependentOps() as probe:  # the counter sees a wait
        torch.ones(2).sum().item()
    assert probe.seen["aten::_local_scalar_dense"] == 1
