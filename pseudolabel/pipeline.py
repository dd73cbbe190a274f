"""Stage one's labelling pipeline over a list of images: decoding and preprocessing ahead in threads, the networks on
batches, every image's failure isolated, finished images staged by a background thread.

One path for one image or many on every device, for one setting (``tools/gen_pseudo.sh``) or a sweep's rows
(``tools/ablate.sh``): :meth:`Labeller.prepare` -> :meth:`Labeller.encode` -> :meth:`Labeller.label_batch` -> a
:class:`PendingRecord` (docs/design.md#layout-and-data-flow; the CUDA streams: docs/stage_one.md#stage-one-on-a-gpu).
A batch whose batched step fails (out of memory included) is retried image by image; an image that fails alone
becomes an :class:`ImageFailure` and the run goes on (for each setting on its own). KeyboardInterrupt is never caught.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from pseudolabel.canvas import crop
from pseudolabel.cam.skipcam import CAMBatch, FrozenFeatures, SkipCAM
from pseudolabel.datasets import Sample
from pseudolabel.image_io import ImageReadError, read_rgb
from pseudolabel.sam.refine import ImageEmbedding, MaskCache, SAMInput, SAMRefiner
from pseudolabel.storage.class_stats import ClassStats
from pseudolabel.storage.shards import LabelRecord
from pseudolabel.transfer import Download

LOG = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_CUDA_BATCH_SIZE = 8  # images per batch on a GPU (docs/stage_one.md#stage-one-on-a-gpu); 1 on a CPU
STAGES = ("decode", "clip_frozen", "sam_encoder", "skipcam", "sam", "write")  # Labeller.seconds' stages (+ "write")
OOM_HINT = "out of memory: try a smaller --batch-size, or --image-size for a very large image"
BATCHED_MAX_PIXELS = 1 << 20  # larger images are labelled one by one (a canvas of the batch holds the largest)


def default_batch_size(device: torch.device) -> int:
    """``--batch-size`` when not given: 1 on a CPU (batching gains nothing), ``DEFAULT_CUDA_BATCH_SIZE`` on a GPU."""
    return DEFAULT_CUDA_BATCH_SIZE if device.type == "cuda" else 1


def default_workers(device: torch.device) -> int:
    """``--workers`` when not given: 2 decoding threads on a CPU (the cores are the networks'), up to 8 on a GPU."""
    return min(8, os.cpu_count() or 2) if device.type == "cuda" else 2


@dataclass
class Setting:
    """One stage-one setting a :class:`Labeller` runs: its Skip-CAM and SAM refiner (None: Y0 is the label)."""

    cam: SkipCAM
    refiner: SAMRefiner | None


def input_key(cam: SkipCAM) -> tuple:
    """What CLIP's network input depends on: the model and the CAM input size (image size and token budget)."""
    return id(cam.model), cam.cfg.image_size, cam.cfg.max_tokens


def frozen_key(cam: SkipCAM) -> tuple:
    """What CLIP's frozen-block outputs depend on: the network input (:func:`input_key`), the blocks whose attentions
    are read (the others run fused attention) and the precision."""
    return *input_key(cam), cam.cfg.attn_blocks, cam.precision


@dataclass
class PreparedImage:
    """A decoded image and its network inputs on the host (pinned on CUDA): CLIP's per :func:`input_key`, SAM's per
    predictor of the labeller's settings."""

    sample: Sample
    image: np.ndarray                   # (H, W, 3) uint8
    pixels: torch.Tensor                # (H, W, 3) uint8, for PAR (pinned on CUDA)
    clip_inputs: dict[tuple, torch.Tensor]      # (3, h, w) float32, by input_key
    sam_inputs: dict[int, SAMInput]             # by id of the predictor
    seconds: float                      # decoding and preprocessing


@dataclass
class EncodedImage:
    """What the batch step gives one image, on the device: frozen features by :func:`frozen_key`, SAM embeddings by
    predictor, and this image's share of each one's seconds."""

    frozen: dict[tuple, FrozenFeatures]
    embeddings: dict[int, ImageEmbedding]
    seconds: dict                       # frozen key or predictor id -> seconds
    pixels: torch.Tensor | np.ndarray   # the image on the device (a GPU) or the host array (a CPU)
    ready: torch.cuda.Event | None      # recorded after the batch step on CUDA


class SharedWork:
    """What the settings of one labelling step (the same images) share: each Skip-CAM's output with its seconds, and
    SAM's decoded masks (:class:`~pseudolabel.sam.refine.MaskCache`; only when several settings refine)."""

    def __init__(self, several: bool):
        self.cams: dict[int, tuple[CAMBatch, float]] = {}
        self.masks = MaskCache() if several else None


@dataclass
class PendingRecord:
    """A labelled image whose arrays may still be on their way from the GPU: :meth:`result` waits for its batch's
    copies and builds the :class:`~pseudolabel.storage.shards.LabelRecord` (in the shard writer's thread)."""

    sample: Sample
    size: tuple[int, int]               # (H, W)
    class_ids: tuple[int, ...]          # the classes Skip-CAM labelled (sorted)
    grid: tuple[int, int]               # (h, w) of the localization maps
    prompts: tuple[int, ...] | None     # SAM's prompt points per class; None without refinement
    download: Download                  # the batch's: refined and Y0 canvases, localization maps, masks accepted
    index: int                          # this image's entry in the canvases
    maps: slice                         # its localization maps in the batch's flat copy

    def result(self) -> LabelRecord:
        refined, initial = (np.ascontiguousarray(crop(self.download.get(k)[self.index], self.size)) for k in (0, 1))
        loc_maps = self.download.get(2)[self.maps].reshape(len(self.class_ids), *self.grid)
        accepted = self.download.get(3)[self.index, :len(self.class_ids)] if self.prompts is not None else None
        stats = ClassStats.measure(self.sample.class_ids, initial, refined, self.prompts, accepted)
        return LabelRecord(image_id=self.sample.image_id, refined=refined, initial=initial, loc_maps_lowres=loc_maps,
                           loc_class_ids=self.class_ids, class_ids=self.sample.class_ids, size=tuple(self.size),
                           class_stats=stats)


@dataclass
class ImageFailure:
    """An image left out of this run, with the reason."""

    sample: Sample
    path: str
    reason: str
    stage: str                          # "read" (decoding) or "label" (the networks)


def failure_reason(error: BaseException) -> str:
    """One line for the failure list: the error's type and first line, with a hint when memory ran out."""
    text = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:400]
    out_of_memory = isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)) or "can't allocate memory" in text
    return f"{text} ({OOM_HINT})" if out_of_memory else text


def is_fatal(error: BaseException) -> bool:
    """Errors after which no later image can succeed either: the CUDA context is lost."""
    text = str(error)
    return isinstance(error, RuntimeError) and not isinstance(error, torch.cuda.OutOfMemoryError) and (
        text.startswith("CUDA error") or "device-side assert" in text or "CUBLAS_STATUS" in text)


class Labeller:
    """Labels images under one or more stage-one :class:`Setting` s on one device (see the module). Each image is
    decoded once and what settings share is computed once per labelling step (docs/ablations.md#what-is-shared), so
    each setting's labels are those of a Labeller of that setting alone.

    ``seconds``: per setting, the seconds by stage a Labeller of that setting alone would spend. ``timed``: on CUDA,
    wait for the GPU after each stage, so that ``seconds`` holds real stage times (benchmarks; the stages then do not
    overlap); else a GPU's stage times are host times.
    """

    def __init__(self, settings: list[Setting], device: str | torch.device, timed: bool = False):
        self.device, self.timed = torch.device(device), timed
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.settings = [Setting(s.cam, s.refiner if s.refiner is not None and s.refiner.cfg.enabled else None)
                         for s in settings]
        self.frozen_by = {frozen_key(s.cam): s.cam for s in self.settings}       # key -> the SkipCAM that runs it
        self.input_by = {input_key(cam): cam for cam in self.frozen_by.values()}  # key -> the SkipCAM that makes it
        self.sam_by = {id(s.refiner.predictor): s.refiner for s in self.settings if s.refiner}
        self.cuda = self.device.type == "cuda"
        # a batch's images in one labelling step on a GPU; on a CPU each alone, so no label depends on the batch
        self.together = self.cuda
        self.seconds = [collections.Counter() for _ in self.settings]  # per setting, by stage, all images
        if self.cuda:  # priority: 0 low, -1 high
            self.batch_stream = torch.cuda.Stream(self.device, priority=0)
            self.image_stream = torch.cuda.Stream(self.device, priority=-1)

    def sharing_plan(self, names: list[str]) -> Iterator[str]:
        """One line per setting (named by ``names``): what it computes and what it reuses from an earlier one."""
        first: dict[tuple, str] = {}
        for name, setting in zip(names, self.settings):
            parts = [("CLIP frozen blocks", ("frozen", frozen_key(setting.cam))),
                     ("Skip-CAM output", ("cam", id(setting.cam)))]
            if setting.refiner:
                parts.append((f"SAM {setting.refiner.cfg.sam_model} image embedding",
                              ("sam", id(setting.refiner.predictor))))
            said = [f"{what}: {'computes' if first.setdefault(key, name) == name else 'reuses ' + repr(first[key])}"
                    for what, key in parts]
            yield f"row '{name}': " + "; ".join(said)

    # -- the stages -----------------------------------------------------------------------------------------------
    def prepare(self, sample: Sample) -> PreparedImage:
        """Decode an image and compute its network inputs on the host (thread-safe); ``ImageReadError`` if unusable."""
        start = time.perf_counter()
        image = read_rgb(sample.image_path)
        pixels = torch.from_numpy(image)
        clip_inputs = {key: cam.preprocess(image) for key, cam in self.input_by.items()}
        sam_inputs = {key: refiner.prepare(image) for key, refiner in self.sam_by.items()}
        if self.cuda:  # contiguous and page-locked, so the copies to the GPU run asynchronously
            pixels = pixels.pin_memory()
            clip_inputs = {key: x.contiguous().pin_memory() for key, x in clip_inputs.items()}
            sam_inputs = {key: SAMInput(x.pixels.pin_memory(), x.original_size) for key, x in sam_inputs.items()}
        return PreparedImage(sample, image, pixels, clip_inputs, sam_inputs, time.perf_counter() - start)

    def encode(self, items: list[PreparedImage]) -> list[EncodedImage]:
        """The batch step: CLIP's frozen blocks of each frozen key (images of one CAM input size together) and each
        SAM predictor's image encoder for all images at once (on a CPU, image by image)."""
        frozen, embeddings, seconds = [{} for _ in items], [{} for _ in items], [{} for _ in items]
        with torch.cuda.stream(self.batch_stream) if self.cuda else contextlib.nullcontext():
            for key, cam in self.frozen_by.items():
                with self._stage("clip_frozen") as spent:
                    features = cam.frozen([item.clip_inputs[input_key(cam)] for item in items])
                for f, s, feature in zip(frozen, seconds, features):
                    f[key], s[key] = feature, spent() / len(items)
            for key, refiner in self.sam_by.items():
                with self._stage("sam_encoder") as spent:
                    embedded = refiner.embed([item.sam_inputs[key] for item in items])
                for e, s, embedding in zip(embeddings, seconds, embedded):
                    e[key], s[key] = embedding, spent() / len(items)
            if self.cuda:
                pixels = [item.pixels.to(self.device, non_blocking=True) for item in items]
                ready = torch.cuda.Event()
                ready.record(self.batch_stream)
            else:
                pixels, ready = [item.image for item in items], None
        return [EncodedImage(*parts, ready) for parts in zip(frozen, embeddings, seconds, pixels)]

    def label_batch(self, items: list[PreparedImage], encoded: list[EncodedImage], index: int = 0,
                    shared: SharedWork | None = None) -> list[PendingRecord]:
        """The labelling step of setting ``index`` on several images together: Skip-CAM (or its output in ``shared``)
        and SAM refinement of all of them, then their labels, Y0, localization maps and accepted-mask counts copied to
        the host in four asynchronous copies."""
        cam, refiner = self.settings[index].cam, self.settings[index].refiner
        seconds, shared = self.seconds[index], shared or SharedWork(False)
        for item, e in zip(items, encoded):
            seconds.update(decode=item.seconds, clip_frozen=e.seconds[frozen_key(cam)])
            if refiner:
                seconds["sam_encoder"] += e.seconds[id(refiner.predictor)]
        with torch.cuda.stream(self.image_stream) if self.cuda else contextlib.nullcontext():
            self._wait_for(encoded)
            if id(cam) not in shared.cams:
                with self._stage("skipcam") as spent:
                    cams = cam.label_batch([e.pixels for e in encoded], [e.frozen[frozen_key(cam)] for e in encoded],
                                           [i.sample.class_ids for i in items])
                shared.cams[id(cam)] = (cams, spent())
            cams, cam_seconds = shared.cams[id(cam)]
            seconds.update(cams.timings, skipcam=cam_seconds)
            refined = None
            if refiner:
                with self._stage("sam") as spent:
                    refined = refiner.refine_batch([e.embeddings[id(refiner.predictor)] for e in encoded],
                                                   cams.labels, cams.scores, cams.sizes, cams.class_ids, shared.masks)
                seconds.update(refined.timings)
                seconds["sam"] += spent() + refined.reused_seconds
            download = Download()
            download.add_all([refined.labels if refined else cams.labels, cams.labels,
                              torch.cat([m.flatten() for m in cams.loc_maps]),
                              refined.masks_accepted if refined else cams.labels.new_zeros(1, 1)])
            download.close()
        stops = np.cumsum([m.numel() for m in cams.loc_maps]).tolist()
        return [PendingRecord(item.sample, item.image.shape[:2], ids, tuple(maps.shape[1:]),
                              refined.prompts[i] if refined else None, download, i, slice(stop - maps.numel(), stop))
                for i, (item, ids, maps, stop) in enumerate(zip(items, cams.class_ids, cams.loc_maps, stops))]

    # -- the loop -------------------------------------------------------------------------------------------------
    def label_all(self, samples: list[Sample], batch_size: int, workers: int, deferred: bool = False,
                  wanted: list[set[str]] | None = None
                  ) -> Iterator[list[LabelRecord | PendingRecord | ImageFailure | None]]:
        """Every sample's results in order, one per setting: its record or failure, None where ``wanted`` (the
        image ids each setting labels; default all) leaves the setting out. Batch ``n + 1``'s batch step is queued
        before batch ``n``'s labelling step (see the module). ``deferred``: a batch-labelled image comes as a
        :class:`PendingRecord` (its ``result()`` waits for its copies from the GPU), else as its record."""
        wanted = wanted or [None] * len(self.settings)
        prepared = prepared_ahead(samples, self.prepare, workers)
        pending = None
        try:
            for batch in batches(prepared, max(1, batch_size)):
                encoded = self._isolated([item for item in batch if isinstance(item, PreparedImage)],
                                         lambda some, retry: self.encode(some),
                                         "a batch of %d images failed (%s); labelling them one by one")
                if pending is not None:
                    yield from self._label_batch(*pending, wanted, deferred)
                pending = (batch, encoded)
            if pending is not None:
                yield from self._label_batch(*pending, wanted, deferred)
        finally:
            prepared.close()  # stops the decoding threads now, also when leaving by an exception (Ctrl-C)

    def _label_batch(self, batch: list, encoded: dict, wanted: list[set[str] | None], deferred: bool
                     ) -> Iterator[list]:
        """The labelling steps of a batch, setting by setting: on a GPU its images together (:meth:`label_batch`),
        but an image larger than :data:`BATCHED_MAX_PIXELS` alone; on a CPU each image alone (the same step on one
        image). The settings of one step share a :class:`SharedWork`."""
        ready = [item for item in batch if isinstance(encoded.get(id(item)), EncodedImage)]
        fits = [item.image.shape[0] * item.image.shape[1] <= BATCHED_MAX_PIXELS for item in ready]
        small = [item for item, f in zip(ready, fits) if f]
        steps = [small] + [[item] for item, f in zip(ready, fits) if not f] if self.together and len(small) > 1 \
            else [[item] for item in ready]
        results = [{} for _ in self.settings]   # per setting, by id(item)
        for step in steps:
            shared = SharedWork(sum(s.refiner is not None for s in self.settings) > 1)
            for index, ids in enumerate(wanted):
                if items := [item for item in step if ids is None or item.sample.image_id in ids]:
                    def label(some, retry, index=index, shared=shared):  # a retry shares nothing
                        return self.label_batch(some, [encoded[id(item)] for item in some], index,
                                                SharedWork(False) if retry else shared)
                    results[index].update(self._isolated(
                        items, label, "labelling %d images together failed (%s); labelling them one by one"))
        for item in batch:  # per setting: None where not wanted, the failure of an unread image, else its result
            out = [None if ids is not None and item.sample.image_id not in ids
                   else item if isinstance(item, ImageFailure) else results[index].get(id(item), encoded[id(item)])
                   for index, ids in enumerate(wanted)]
            yield [r.result() if isinstance(r, PendingRecord) and not deferred else r for r in out]

    def _isolated(self, items: list[PreparedImage], step: Callable[[list[PreparedImage], bool], list], warning: str,
                  retry: bool = False) -> dict:
        """``step(items, retry)`` keyed by ``id(item)``; if it fails, ``step([item], True)`` of each image alone
        (``warning`` logged); an image that fails alone becomes an :class:`ImageFailure`."""
        if not items:
            return {}
        try:
            return dict(zip(map(id, items), step(items, retry)))
        except Exception as error:  # noqa: BLE001 - any per-image error: recorded, the run goes on
            if is_fatal(error):
                raise
            if self.cuda and isinstance(error, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            if len(items) == 1:
                return {id(items[0]): ImageFailure(items[0].sample, str(items[0].sample.image_path),
                                                   failure_reason(error), "label")}
            LOG.warning(warning, len(items), failure_reason(error))
            del error
            return {key: value for item in items for key, value in self._isolated([item], step, warning, True).items()}

    # -- helpers ------------------------------------------------------------------------------------------------
    def _wait_for(self, encoded: list[EncodedImage]) -> None:
        """On CUDA, make the labelling stream wait for the batch step and keep the batch step's tensors from being
        reused by the caching allocator before the labelling stream's work on them is done."""
        if not self.cuda:
            return
        for event in {id(e.ready): e.ready for e in encoded}.values():
            self.image_stream.wait_event(event)
        for e in encoded:
            tensors = [t for f in e.frozen.values() for t in (*f.outputs, *f.attentions)]
            for tensor in tensors + [e.pixels] + [m.features for m in e.embeddings.values()]:
                tensor.record_stream(self.image_stream)

    @contextlib.contextmanager
    def _stage(self, stage: str) -> Iterator[Callable[[], float]]:
        """Time a stage (waiting for the GPU when ``timed``), as a named range for profilers; yields a function that
        gives its seconds afterwards."""
        tick, spent = time.perf_counter(), [0.0]
        with torch.profiler.record_function(f"stage: {stage}"):
            yield lambda: spent[0]
        if self.timed and self.cuda:
            torch.cuda.current_stream(self.device).synchronize()
        spent[0] = time.perf_counter() - tick


def prepared_ahead(samples: list[Sample], prepare: Callable[[Sample], T], workers: int) -> Iterator[T | ImageFailure]:
    """``prepare(sample)`` of every sample, in order, computed ahead in ``workers`` threads; a sample whose image
    cannot be read (``ImageReadError``) gives an :class:`ImageFailure`."""
    def attempt(sample):
        try:
            return prepare(sample)
        except ImageReadError as error:
            return ImageFailure(sample, error.path, error.reason, "read")

    workers = max(1, workers)
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="prepare")
    try:
        iterator = iter(samples)
        ahead = collections.deque(pool.submit(attempt, sample) for sample in itertools.islice(iterator, 2 * workers))
        while ahead:
            item = ahead.popleft().result()
            if (sample := next(iterator, None)) is not None:
                ahead.append(pool.submit(attempt, sample))
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # prompt on Ctrl-C: queued images are not decoded


def batches(items: Iterable, size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


class BackgroundWriter:
    """Runs ``write(item)`` for each put item in a background thread, in order (staging finished images while the
    networks go on). An error there stops the writer and is raised in the caller's next :meth:`put` or at
    :meth:`close`; on leaving a ``with`` block by an exception (Ctrl-C included) the queued items are written
    first, since they are finished images."""

    def __init__(self, write: Callable, depth: int = 32):
        self.write, self.seconds, self.error = write, 0.0, None
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.thread = threading.Thread(target=self._run, name="shard-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not _STOP:
            if self.error is None:
                tick = time.perf_counter()
                try:
                    self.write(item)
                except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                    self.error = error
                self.seconds += time.perf_counter() - tick

    def put(self, item) -> None:
        while True:
            self._raise()
            with contextlib.suppress(queue.Full):
                self.queue.put(item, timeout=0.1)
                return

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, kind, value, traceback) -> bool:
        self.queue.put(_STOP)
        self.thread.join()
        if kind is None:  # leaving with an error: the finished images are written, the first error is kept
            self._raise()
        return False


_STOP = object()
