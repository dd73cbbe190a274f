"""Stage one's labelling pipeline over a list of images: decoding and preprocessing ahead in threads, the networks on
batches, every image's failure isolated, finished images staged by a background thread.

The stages and their products (each reusable, docs/design.md):
decoded image -> :meth:`Labeller.prepare` (CLIP input, SAM input, on the host; pinned on CUDA)
-> :meth:`Labeller.encode`, per batch (CLIP's frozen blocks, :class:`~pseudolabel.cam.skipcam.FrozenFeatures`, and
SAM's image encoder, :class:`~pseudolabel.sam.refine.ImageEmbedding`)
-> :meth:`Labeller.label_batch` (Skip-CAM maps, Y0, SAM prompts, masks, filter and merge of all images of the batch
together: :meth:`~pseudolabel.cam.skipcam.SkipCAM.label_batch`, :meth:`~pseudolabel.sam.refine.SAMRefiner.refine_batch`;
one path for one image or many, on every device) -> a :class:`~pseudolabel.storage.shards.LabelRecord`.

On a GPU the encoders (large kernels, no waiting for the host) run on a low-priority CUDA stream one batch ahead of
the labelling step on a high-priority stream, which waits for the host twice per batch (OpenCV's contours for CAA's
boxes, the labels at the grid points for SAM's prompts): meanwhile the GPU has the next batch's encoders to run. The
labels come back to the host by asynchronous copies into page-locked memory, which the shard writer's thread waits
for (:class:`PendingRecord`), so the loop goes on to the next batch at once. Every device runs the same steps;
on a CPU each image goes through them alone (the default batch size is 1 there, and a larger one changes no label
or map: batching gains nothing on a CPU), on a GPU a batch's images together.

A batch whose batched step fails (out of memory included) is retried image by image; an image that fails alone
becomes an :class:`ImageFailure` and the run goes on. KeyboardInterrupt is never caught.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
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
from pseudolabel.cam.skipcam import CAMOutput, FrozenFeatures, SkipCAM
from pseudolabel.datasets import Sample
from pseudolabel.image_io import ImageReadError, read_rgb
from pseudolabel.sam.refine import ImageEmbedding, Refinement, SAMInput, SAMRefiner
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
    """``--batch-size`` when not given: 1 on a CPU (batching gains nothing there), ``DEFAULT_CUDA_BATCH_SIZE`` on
    a GPU."""
    return DEFAULT_CUDA_BATCH_SIZE if device.type == "cuda" else 1


def default_workers(device: torch.device) -> int:
    """``--workers`` when not given: 2 decoding threads on a CPU (the cores are the networks'), up to 8 on a GPU."""
    return min(8, os.cpu_count() or 2) if device.type == "cuda" else 2


@dataclass
class PreparedImage:
    """A decoded image and its network inputs, on the host (pinned on CUDA)."""

    sample: Sample
    image: np.ndarray                   # (H, W, 3) uint8
    pixels: torch.Tensor                # (H, W, 3) uint8, for PAR (pinned on CUDA)
    clip_input: torch.Tensor            # (3, h, w) float32
    sam_input: SAMInput | None          # None without SAM refinement
    seconds: float                      # decoding and preprocessing


@dataclass
class EncodedImage:
    """What the batch step gives one image, on the device."""

    frozen: FrozenFeatures
    embedding: ImageEmbedding | None
    pixels: torch.Tensor | np.ndarray   # the image on the device (a GPU) or the host array (a CPU)
    ready: torch.cuda.Event | None      # recorded after the batch step on CUDA


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
        return _record(self.sample, self.size, self.class_ids, refined, initial, loc_maps, self.prompts, accepted)


def _record(sample: Sample, size, class_ids, refined, initial, loc_maps, prompts, accepted) -> LabelRecord:
    """The shard record of a labelled image, with its per-class statistics."""
    stats = ClassStats.measure(sample.class_ids, initial, refined, prompts, accepted)
    return LabelRecord(image_id=sample.image_id, refined=refined, initial=initial, loc_maps_lowres=loc_maps,
                       loc_class_ids=class_ids, class_ids=sample.class_ids, size=tuple(size), class_stats=stats)


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


def recover(error: Exception, device: torch.device) -> None:
    """After an image failed: re-raise what no later image survives; after running out of GPU memory, free the cached
    blocks."""
    if is_fatal(error):
        raise error
    if device.type == "cuda" and isinstance(error, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()


class Labeller:
    """Labels images with a Skip-CAM and (optionally) a SAM refiner on one device (see the module).

    ``timed``: on CUDA, wait for the GPU at the end of each stage so that ``seconds`` holds real stage times (for
    benchmarks; it stops the stages from overlapping). Without it, on a GPU the stage times are host times.
    """

    def __init__(self, cam: SkipCAM, refiner: SAMRefiner | None, device: str | torch.device, timed: bool = False):
        self.cam, self.device, self.timed = cam, torch.device(device), timed
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.refiner = refiner if refiner is not None and refiner.cfg.enabled else None
        self.cuda = self.device.type == "cuda"
        # a batch's images in one labelling step on a GPU; on a CPU each alone, so no label depends on the batch
        self.together = self.cuda
        self.seconds: collections.Counter = collections.Counter()  # by stage, all images
        if self.cuda:  # priority: 0 low, -1 high
            self.batch_stream = torch.cuda.Stream(self.device, priority=0)
            self.image_stream = torch.cuda.Stream(self.device, priority=-1)

    # -- the stages -----------------------------------------------------------------------------------------------
    def prepare(self, sample: Sample) -> PreparedImage:
        """Decode an image and compute its network inputs on the host (thread-safe); ``ImageReadError`` if the
        file cannot be used."""
        start = time.perf_counter()
        image = read_rgb(sample.image_path)
        pixels, clip_input = torch.from_numpy(image), self.cam.preprocess(image)
        sam_input = self.refiner.prepare(image) if self.refiner else None
        if self.cuda:  # contiguous and page-locked, so the copies to the GPU run asynchronously
            pixels, clip_input = pixels.pin_memory(), clip_input.contiguous().pin_memory()
            if sam_input is not None:
                sam_input = SAMInput(sam_input.pixels.pin_memory(), sam_input.original_size)
        return PreparedImage(sample, image, pixels, clip_input, sam_input, time.perf_counter() - start)

    def encode(self, items: list[PreparedImage]) -> list[EncodedImage]:
        """The batch step: CLIP's frozen blocks (images of one CAM input size together) and SAM's image encoder
        for all images at once (on a CPU, image by image)."""
        with self._on(self.batch_stream if self.cuda else None):
            with self._stage("clip_frozen"):
                frozen = self.cam.frozen([item.clip_input for item in items])
            with self._stage("sam_encoder"):
                embeddings = self.refiner.embed([item.sam_input for item in items]) if self.refiner \
                    else [None] * len(items)
            if self.cuda:
                pixels = [item.pixels.to(self.device, non_blocking=True) for item in items]
                ready = torch.cuda.Event()
                ready.record(self.batch_stream)
            else:
                pixels, ready = [item.image for item in items], None
        return [EncodedImage(f, e, p, ready) for f, e, p in zip(frozen, embeddings, pixels)]

    def label_batch(self, items: list[PreparedImage], encoded: list[EncodedImage]) -> list[PendingRecord]:
        """The labelling step of several images together: Skip-CAM
        (:meth:`~pseudolabel.cam.skipcam.SkipCAM.label_batch`) and SAM refinement
        (:meth:`~pseudolabel.sam.refine.SAMRefiner.refine_batch`) of all of them, then their labels, Y0,
        localization maps and accepted-mask counts copied to the host in four asynchronous copies."""
        with self._on(self.image_stream if self.cuda else None):
            self._wait_for(encoded)
            with self._stage("skipcam"):
                pixels = [torch.as_tensor(e.pixels) for e in encoded]
                cams = self.cam.label_batch(pixels, [e.frozen for e in encoded], [i.sample.class_ids for i in items])
                self.seconds.update(cams.timings)
            with self._stage("sam"):
                refined = self.refiner.refine_batch([e.embedding for e in encoded], cams.labels, cams.scores,
                                                    cams.sizes, cams.class_ids) if self.refiner else None
                if refined:
                    self.seconds.update(refined.timings)
            download = Download()
            download.add_all([refined.labels if refined else cams.labels, cams.labels,
                              torch.cat([m.flatten() for m in cams.loc_maps]),
                              refined.masks_accepted if refined else cams.labels.new_zeros(1, 1)])
            download.close()
        stops = np.cumsum([m.numel() for m in cams.loc_maps]).tolist()
        return [PendingRecord(item.sample, item.image.shape[:2], ids, tuple(maps.shape[1:]),
                              refined.prompts[index] if refined else None, download, index, slice(stop - maps.numel(), stop))
                for index, (item, ids, maps, stop) in enumerate(zip(items, cams.class_ids, cams.loc_maps, stops))]

    # -- the loop -------------------------------------------------------------------------------------------------
    def label_all(self, samples: list[Sample], batch_size: int, workers: int, deferred: bool = False
                  ) -> Iterator[LabelRecord | PendingRecord | ImageFailure]:
        """Every sample's record or failure, in order. Batch ``n + 1``'s batch step is queued before batch ``n``'s
        labelling step (see the module). ``deferred``: a batch-labelled image comes as a :class:`PendingRecord`
        (its ``result()`` waits for its copies from the GPU), else as its record."""
        prepared = self._prepared(samples, workers)
        pending = None
        try:
            for batch in batches(prepared, max(1, batch_size)):
                ready = [item for item in batch if isinstance(item, PreparedImage)]
                encoded = self._encode_isolated(ready)
                if pending is not None:
                    yield from self._label_batch(*pending, deferred)
                pending = (batch, encoded)
            if pending is not None:
                yield from self._label_batch(*pending, deferred)
        finally:
            prepared.close()  # stops the decoding threads now, also when leaving by an exception (Ctrl-C)

    def _prepared(self, samples: list[Sample], workers: int) -> Iterator[PreparedImage | ImageFailure]:
        """Prepared images in order, computed ahead in ``workers`` threads."""
        items = prepared_ahead(samples, self.prepare, workers)
        try:
            for item in items:
                if isinstance(item, PreparedImage):
                    self.seconds["decode"] += item.seconds
                yield item
        finally:
            items.close()  # stops the decoding threads now, also when leaving by an exception (Ctrl-C)

    def _encode_isolated(self, items: list[PreparedImage]) -> dict[int, EncodedImage | ImageFailure]:
        """:meth:`encode` of the batch; if it fails, of each image alone. Keyed by ``id(item)``."""
        if not items:
            return {}
        try:
            return {id(item): enc for item, enc in zip(items, self.encode(items))}
        except Exception as error:  # noqa: BLE001 - any per-image error: recorded, the run goes on
            self._recover(error)
            if len(items) == 1:
                return {id(items[0]): self._failure(items[0], error)}
            LOG.warning("a batch of %d images failed (%s); labelling them one by one", len(items),
                        failure_reason(error))
            del error
            return {key: value for item in items for key, value in self._encode_isolated([item]).items()}

    def _label_batch(self, batch: list, encoded: dict, deferred: bool) -> Iterator[LabelRecord | PendingRecord |
                                                                                 ImageFailure]:
        """The labelling step of a batch: on a GPU its images together (:meth:`label_batch`), but an image larger
        than :data:`BATCHED_MAX_PIXELS` alone; on a CPU, and after a failed step, each image alone (the same step on
        one image)."""
        together = [item for item in batch if isinstance(item, PreparedImage)
                    and isinstance(encoded[id(item)], EncodedImage)
                    and item.image.shape[0] * item.image.shape[1] <= BATCHED_MAX_PIXELS]
        results = {}
        if len(together) > 1 and self.together:
            try:
                results = {id(item): pending for item, pending in
                           zip(together, self.label_batch(together, [encoded[id(item)] for item in together]))}
            except Exception as error:  # noqa: BLE001 - retried image by image below
                self._recover(error)
                LOG.warning("labelling %d images together failed (%s); labelling them one by one", len(together),
                            failure_reason(error))
                del error
        for item in batch:
            result = item if isinstance(item, ImageFailure) else results.get(id(item), encoded[id(item)])
            if isinstance(result, EncodedImage):
                try:
                    result = self.label_batch([item], [result])[0]
                except Exception as error:  # noqa: BLE001 - any per-image error: recorded, the run goes on
                    self._recover(error)
                    result = self._failure(item, error)
            yield result.result() if isinstance(result, PendingRecord) and not deferred else result

    def _failure(self, item: PreparedImage, error: Exception) -> ImageFailure:
        return ImageFailure(item.sample, str(item.sample.image_path), failure_reason(error), "label")

    def _recover(self, error: Exception) -> None:
        recover(error, self.device)

    # -- helpers ------------------------------------------------------------------------------------------------
    def _on(self, stream):
        return torch.cuda.stream(stream) if stream is not None else _NoStream()

    def _wait_for(self, encoded: list[EncodedImage]) -> None:
        """On CUDA, make the labelling stream wait for the batch step and keep the batch step's tensors from being
        reused by the caching allocator before the labelling stream's work on them is done."""
        if not self.cuda:
            return
        for event in {id(e.ready): e.ready for e in encoded}.values():
            self.image_stream.wait_event(event)
        for e in encoded:
            tensors = [*e.frozen.outputs, *e.frozen.attentions, e.pixels]
            for tensor in tensors + ([e.embedding.features] if e.embedding is not None else []):
                tensor.record_stream(self.image_stream)

    @contextlib.contextmanager
    def _stage(self, stage: str):
        """Time a stage into ``seconds`` (waiting for the GPU when ``timed``), as a named range for profilers."""
        tick = time.perf_counter()
        with torch.profiler.record_function(f"stage: {stage}"):
            yield
        if self.timed and self.cuda:
            torch.cuda.current_stream(self.device).synchronize()
        self.seconds[stage] += time.perf_counter() - tick


class _NoStream:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


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
        ahead = collections.deque()
        iterator = iter(samples)
        for sample in iterator:
            ahead.append(pool.submit(attempt, sample))
            if len(ahead) >= 2 * workers:
                break
        while ahead:
            item = ahead.popleft().result()
            nxt = next(iterator, None)
            if nxt is not None:
                ahead.append(pool.submit(attempt, nxt))
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # prompt on Ctrl-C: queued images are not decoded


def label_record(sample: Sample, size: tuple[int, int], cam_out: CAMOutput, refinement: Refinement | None
                 ) -> LabelRecord:
    """What stage one stores for one image of ``size`` (H, W): the refined label (Y0 without refinement), Y0, the
    localization maps and the per-class records."""
    return _record(sample, size, cam_out.class_ids, refinement.labels if refinement else cam_out.y0, cam_out.y0,
                   cam_out.loc_maps_lowres, refinement and refinement.prompts, refinement and refinement.masks_accepted)


def batches(items: Iterable, size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
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
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Write what is queued, stop the thread and raise its error, if any."""
        self.queue.put(_STOP)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, kind, value, traceback) -> bool:
        if kind is None:
            self.close()
        else:  # already leaving with an error: write the finished images, keep the first error
            self.queue.put(_STOP)
            self.thread.join()
        return False


_STOP = object()
