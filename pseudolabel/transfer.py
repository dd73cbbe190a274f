"""Copies between the host and a GPU that never make the host wait for the GPU.

PyTorch waits for the whole CUDA stream after a copy from or to pageable host memory (``torch.tensor(..., device=
"cuda")``, ``.cpu()``, ``.item()``): each such copy costs the time of all the work queued before it. Stage one's
batched path makes its small tensors (indices, class keys, prompt points) with :func:`upload`, from page-locked
memory, and brings its results back with :class:`Download`, whose copies run in stream order and are waited for only
by whoever reads them (the shard writer's thread). On a CPU both are plain tensors.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def upload(values, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``values`` (an array, a tensor on the host or nested lists) as a tensor on ``device``, copied asynchronously
    from page-locked memory on a GPU."""
    host = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values, dtype=dtype)
    if torch.device(device).type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


class Download:
    """Tensors on their way to the host: :meth:`add` queues an asynchronous copy into page-locked memory on the
    current stream and returns its index; :meth:`close` marks the end of the queue; :meth:`get` waits for the copies
    (the first call only) and returns one as a numpy array. Thread-safe to read once closed."""

    def __init__(self) -> None:
        self.host: list[torch.Tensor] = []
        self.done: torch.cuda.Event | None = None

    def add(self, tensor: torch.Tensor) -> int:
        if tensor.device.type == "cuda":
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host.copy_(tensor, non_blocking=True)
        else:
            host = tensor.detach().clone()
        self.host.append(host)
        return len(self.host) - 1

    def add_all(self, tensors: Sequence[torch.Tensor]) -> list[int]:
        return [self.add(t) for t in tensors]

    def close(self) -> "Download":
        if any(h.is_pinned() for h in self.host):
            self.done = torch.cuda.Event()
            self.done.record()
        return self

    def get(self, index: int) -> np.ndarray:
        if self.done is not None:
            self.done.synchronize()
        return self.host[index].numpy()
