"""The data path: encoded rows as tensors, and the shuffled batches an epoch trains on.

When the encoded training rows fit in device memory (CPU: always, they already sit in host
memory; CUDA: up to ``RESIDENT_MEMORY_FRACTION`` of the free memory) they stay resident as
tensors and each epoch slices batches out of one ``torch.randperm`` permutation on the device:
no DataLoader, no per-row Python (:func:`resident_batches`). Otherwise batches are gathered on
the host into pinned staging buffers and copied with ``non_blocking`` on a side stream, one
batch ahead, so the copy overlaps the previous step (:func:`streamed_batches`). The permutation
comes from a CPU generator in both cases, so both paths see the same batches. The ragged last
batch of an epoch is dropped: every step has the same shape, which keeps a compiled graph from
recompiling; the dropped rows differ every epoch.

The validation rows (:class:`ValidationRows`) sit where the network reads them, with host
copies of their labels and weights made once per fit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

#: Fraction of free GPU memory the resident training rows may take; the rest is for activations.
RESIDENT_MEMORY_FRACTION = 0.5

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # numeric, categorical, label, weight


def map_batch(function: Callable[[torch.Tensor], torch.Tensor], batch: Batch) -> Batch:
    """``function`` applied to each of a batch's four tensors, in order."""
    numeric, categorical, label, weight = batch
    return function(numeric), function(categorical), function(label), function(weight)


@dataclass
class TensorData:
    """Encoded rows as four aligned tensors on one device."""

    numeric: torch.Tensor
    categorical: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor

    @classmethod
    def from_arrays(cls, numeric: np.ndarray, categorical: np.ndarray, label: np.ndarray,
                    weight: np.ndarray) -> TensorData:
        return cls(torch.from_numpy(np.ascontiguousarray(numeric, dtype=np.float32)),
                   torch.from_numpy(np.ascontiguousarray(categorical, dtype=np.int64)),
                   torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32)),
                   torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)))

    def __len__(self) -> int:
        return len(self.label)

    @property
    def tensors(self) -> Batch:
        return self.numeric, self.categorical, self.label, self.weight

    @property
    def device(self) -> torch.device:
        return self.label.device

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self.tensors)

    def to(self, device: torch.device) -> TensorData:
        return TensorData(*map_batch(lambda t: t.to(device), self.tensors))

    def take(self, index: torch.Tensor) -> Batch:
        return map_batch(lambda t: t.index_select(0, index), self.tensors)


@dataclass
class ValidationRows:
    """The validation rows where the network reads them, with host copies of their labels and
    weights made once per ``fit`` (not once per epoch): the epoch's only copy is its logits."""

    rows: TensorData  # on the training device when resident, else on the host
    label: torch.Tensor  # host, float32
    weight: torch.Tensor  # host, float32
    label_f64: np.ndarray
    weight_f64: np.ndarray
    one_class: bool

    @classmethod
    def of(cls, host: TensorData, device: torch.device | None) -> ValidationRows:
        """``host`` rows (on the CPU), moved to ``device`` when given."""
        label_f64 = host.label.numpy().astype(np.float64)
        return cls(host.to(device) if device is not None else host, host.label, host.weight, label_f64,
                   host.weight.numpy().astype(np.float64), bool(label_f64.min() == label_f64.max()))


def stays_resident(data: TensorData, device: torch.device, setting: bool | None) -> bool:
    """Whether the training rows live on ``device`` for the whole fit: the ``resident`` param, or
    (``setting`` None, "auto") whether they fit (module docstring)."""
    if setting is not None:
        return setting
    if device.type != "cuda":
        return True  # the rows already sit in host memory, which is this device's memory
    free, _ = torch.cuda.mem_get_info(device)
    return data.nbytes <= RESIDENT_MEMORY_FRACTION * free


def resident_batches(data: TensorData, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    """One epoch of shuffled full batches sliced from tensors that stay on their device.

    The permutation is drawn on the CPU ``generator`` (same batches on every device and data
    path) and moved once per epoch; the ragged last batch is dropped so every step has one shape.
    """
    order = torch.randperm(len(data), generator=generator).to(data.device, non_blocking=True)
    for start in range(0, len(data) - batch_size + 1, batch_size):
        yield data.take(order[start:start + batch_size])


def streamed_batches(data: TensorData, batch_size: int, generator: torch.Generator,
                     device: torch.device) -> Iterator[Batch]:
    """One epoch of shuffled full batches gathered on the host and copied to ``device`` ahead of use.

    For rows that do not fit on the GPU (:func:`_pinned_copies`). On the CPU there is nothing to
    overlap and the batches are plain gathers (the same batches :func:`resident_batches` yields).
    """
    order = torch.randperm(len(data), generator=generator)
    starts = range(0, len(data) - batch_size + 1, batch_size)
    if device.type != "cuda":
        for start in starts:
            yield data.take(order[start:start + batch_size])
        return
    yield from _pinned_copies(data, order, starts, batch_size, device)


def _pinned_copies(data: TensorData, order: torch.Tensor, starts: range, batch_size: int,
                   device: torch.device) -> Iterator[Batch]:
    """The batches at ``starts`` of ``order``, copied to a CUDA ``device`` one batch ahead.

    Two pinned staging buffers take turns: while the model computes on batch k, batch k+1 is
    gathered into the other buffer and copied with ``non_blocking`` on a side stream.
    """
    copy_stream = torch.cuda.Stream(device)
    staging = [map_batch(lambda t: torch.empty((batch_size, *t.shape[1:]), dtype=t.dtype, pin_memory=True),
                         data.tensors)
               for _ in range(2)]
    copied: list[torch.cuda.Event | None] = [None, None]  # the event after the last copy out of each buffer

    def stage(k: int) -> Batch:
        slot = k % 2
        previous = copied[slot]
        if previous is not None:
            previous.synchronize()  # the buffer's previous batch has left for the device
        index = order[starts[k]:starts[k] + batch_size]
        for source, buffer in zip(data.tensors, staging[slot], strict=True):
            torch.index_select(source, 0, index, out=buffer)
        with torch.cuda.stream(copy_stream):
            batch = map_batch(lambda buffer: buffer.to(device, non_blocking=True), staging[slot])
            event = torch.cuda.Event()
            event.record(copy_stream)
            copied[slot] = event
        return batch

    if not starts:
        return  # fewer rows than one batch: nothing to stage
    upcoming = stage(0)
    for k in range(len(starts)):
        batch = upcoming
        compute = torch.cuda.current_stream(device)
        compute.wait_stream(copy_stream)  # before the next copy is queued, so only this one is awaited
        for tensor in batch:
            tensor.record_stream(compute)  # allocated on the copy stream, freed after use on this one
        if k + 1 < len(starts):
            upcoming = stage(k + 1)
        yield batch
