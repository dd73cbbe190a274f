"""Stage one's labelling pipeline over a list of images: decoding and preprocessing ahead in threads, the networks on
batches, every image's failure isolated, finished images staged by a background thread.

The stages and their products (each reusable, docs/design.md):
decoded image -> :meth:`Labeller.prepare` (CLIP input, SAM input, on the host; pinned on CUDA)
-> :meth:`Labeller.encode`, per batch (CLIP's frozen blocks, :class:`~pseudolabel.cam.skipcam.FrozenFeatures`, and
SAM's image encoder, :class:`~pseudolabel.sam.refine.ImageEmbedding`)
-> :meth:`Labeller.label`, per image (Skip-CAM maps, Y0, SAM prompts, masks, filter and merge) -> a
:class:`~pseudolabel.storage.shards.LabelRecord`.

On a GPU the batch work (large kernels, no waiting for the host) runs on a low-priority CUDA stream one batch ahead
of the per-image work (small kernels and a few copies to the host, for OpenCV's contours and the prompt points) on a
high-priority stream: whenever the per-image work waits for the host, the GPU has the next batch's encoders to run.
On a CPU every network sees one image at a time, so an image's labels never depend on ``--batch-size``.

A batch whose batched step fails (out of memory included) is retried image by image; an image that fails alone
becomes an :class:`ImageFailure` and the run goes on. KeyboardInterrupt is never caught.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pseudolabel.cam.skipcam import FrozenFeatures, SkipCAM
from pseudolabel.datasets import Sample
from pseudolabel.image_io import ImageReadError, read_rgb
from pseudolabel.sam.refine import ImageEmbedding, SAMInput, SAMRefiner
from pseudolabel.storage.class_stats import ClassStats
from pseudolabel.storage.shards import LabelRecord

LOG = logging.getLogger(__name__)
DEFAULT_CUDA_BATCH_SIZE = 8  # images per batch on a GPU (docs/stage_one.md#stage-one-on-a-gpu); 1 on a CPU
STAGES = ("decode", "clip_frozen", "sam_encoder", "skipcam", "sam", "write")  # Labeller.seconds' stages (+ "write")
OOM_HINT = "out of memory: try a smaller --batch-size, or --image-size for a very large image"


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
            tick = time.perf_counter()
            frozen = self.cam.frozen([item.clip_input for item in items])
            self._lap("clip_frozen", tick)
            tick = time.perf_counter()
            embeddings = self.refiner.embed([item.sam_input for item in items]) if self.refiner else [None] * len(items)
            self._lap("sam_encoder", tick)
            if self.cuda:
                pixels = [item.pixels.to(self.device, non_blocking=True) for item in items]
                ready = torch.cuda.Event()
                ready.record(self.batch_stream)
            else:
                pixels, ready = [item.image for item in items], None
        return [EncodedImage(f, e, p, ready) for f, e, p in zip(frozen, embeddings, pixels)]

    def label(self, item: PreparedImage, encoded: EncodedImage) -> LabelRecord:
        """The per-image step: Skip-CAM maps and Y0 from the frozen features, SAM refinement from the embedding, and
        the per-class records (:class:`~pseudolabel.storage.class_stats.ClassStats`)."""
        sample = item.sample
        with self._on(self.image_stream if self.cuda else None):
            if encoded.ready is not None:
                self.image_stream.wait_event(encoded.ready)
            tick = time.perf_counter()
            cam_out = self.cam.cams_from_frozen([encoded.pixels], [encoded.frozen], [sample.class_ids])[0]
            self.seconds.update(cam_out.timings)
            self._lap("skipcam", tick)
            tick = time.perf_counter()
            refinement = self.refiner.refine_embedded(encoded.embedding, cam_out.label, cam_out.score_maps,
                                                      cam_out.class_ids) if self.refiner else None
            if refinement:
                self.seconds.update({k: v for k, v in refinement.timings.items() if k != "sam_encoder"})
            self._lap("sam", tick)
        refined = refinement.labels if refinement else cam_out.y0
        stats = ClassStats.measure(sample.class_ids, cam_out.y0, refined, refinement and refinement.prompts,
                                   refinement and refinement.masks_accepted)
        return LabelRecord(image_id=sample.image_id, refined=refined, initial=cam_out.y0,
                           loc_maps_lowres=cam_out.loc_maps_lowres, loc_class_ids=cam_out.class_ids,
                           class_ids=sample.class_ids, size=item.image.shape[:2], class_stats=stats)

    # -- the loop -------------------------------------------------------------------------------------------------
    def label_all(self, samples: list[Sample], batch_size: int, workers: int) -> Iterator[LabelRecord | ImageFailure]:
        """Every sample's record or failure, in order. Batch ``n + 1``'s batch step is queued before batch ``n``'s
        per-image steps (see the module)."""
        prepared = self._prepared(samples, workers)
        pending = None
        try:
            for batch in _batches(prepared, max(1, batch_size)):
                ready = [item for item in batch if isinstance(item, PreparedImage)]
                encoded = self._encode_isolated(ready)
                if pending is not None:
                    yield from self._label_batch(*pending)
                pending = (batch, encoded)
            if pending is not None:
                yield from self._label_batch(*pending)
        finally:
            prepared.close()  # stops the decoding threads now, also when leaving by an exception (Ctrl-C)

    def _prepared(self, samples: list[Sample], workers: int) -> Iterator[PreparedImage | ImageFailure]:
        """Prepared images in order, computed ahead in ``workers`` threads."""
        def prepare(sample):
            try:
                return self.prepare(sample)
            except ImageReadError as error:
                return ImageFailure(sample, error.path, error.reason, "read")

        workers = max(1, workers)
        pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="prepare")
        try:
            ahead = collections.deque()
            iterator = iter(samples)
            for sample in iterator:
                ahead.append(pool.submit(prepare, sample))
                if len(ahead) >= 2 * workers:
                    break
            while ahead:
                item = ahead.popleft().result()
                nxt = next(iterator, None)
                if nxt is not None:
                    ahead.append(pool.submit(prepare, nxt))
                if isinstance(item, PreparedImage):
                    self.seconds["decode"] += item.seconds
                yield item
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # prompt on Ctrl-C: queued images are not decoded

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

    def _label_batch(self, batch: list, encoded: dict) -> Iterator[LabelRecord | ImageFailure]:
        for item in batch:
            result = item if isinstance(item, ImageFailure) else encoded[id(item)]
            if isinstance(result, EncodedImage):
                try:
                    result = self.label(item, result)
                except Exception as error:  # noqa: BLE001 - any per-image error: recorded, the run goes on
                    self._recover(error)
                    result = self._failure(item, error)
            yield result

    def _failure(self, item: PreparedImage, error: Exception) -> ImageFailure:
        return ImageFailure(item.sample, str(item.sample.image_path), failure_reason(error), "label")

    def _recover(self, error: Exception) -> None:
        """Re-raise what no later image survives; after running out of GPU memory, free the cached blocks."""
        if is_fatal(error):
            raise error
        if self.cuda and isinstance(error, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()

    # -- helpers ------------------------------------------------------------------------------------------------
    def _on(self, stream):
        return torch.cuda.stream(stream) if stream is not None else _NoStream()

    def _lap(self, stage: str, tick: float) -> None:
        if self.timed and self.cuda:
            torch.cuda.current_stream(self.device).synchronize()
        self.seconds[stage] += time.perf_counter() - tick


class _NoStream:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _batches(items: Iterable, size: int) -> Iterator[list]:
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
