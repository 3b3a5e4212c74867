"""Pure helpers to merge requests into one batch and split the batch's outputs back, row-wise."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from itertools import pairwise

import numpy as np

Feeds = Mapping[str, np.ndarray]


def shape_key(feeds: Feeds) -> tuple[Hashable, ...]:
    """Key under which requests may share a batch: names, dtypes and per-row shapes of every input.

    Args:
        feeds: One array per input name; the leading dimension is the row count.

    Returns:
        A tuple of ``(name, dtype, shape[1:])`` sorted by name.
    """
    if len(feeds) == 1:
        ((name, arr),) = feeds.items()
        return ((name, arr.dtype, arr.shape[1:]),)
    return tuple([(name, feeds[name].dtype, feeds[name].shape[1:]) for name in sorted(feeds)])


def rows(feeds: Feeds) -> int:
    """Number of rows in a request (the shared leading dimension of every input).

    Raises:
        ValueError: no inputs, a scalar input, or inputs that disagree on the row count.
    """
    n: int | None = None
    for name, arr in feeds.items():
        shape = getattr(arr, "shape", None)
        if not shape:
            raise ValueError(f"input {name!r} must be an array with a leading row dimension, got shape {shape}")
        if n is None:
            n = shape[0]
        elif shape[0] != n:
            counts = {key: getattr(value, "shape", (None,))[0] for key, value in feeds.items()}
            raise ValueError(f"inputs disagree on the number of rows: {counts}")
    if n is None:
        raise ValueError("a request needs at least one input")
    return n


def stack(requests: Sequence[Feeds]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Concatenate requests with the same inputs along the row axis.

    Args:
        requests: Feeds of compatible requests (same names, dtypes and per-row shapes).

    Returns:
        ``(feeds, offsets)``: the batched feeds, and row offsets with ``len(requests) + 1`` entries so that request
        ``i`` owns rows ``offsets[i]:offsets[i + 1]``.

    Raises:
        ValueError: no requests, requests with different input names, or a request whose inputs disagree on rows.
    """
    if not requests:
        raise ValueError("nothing to stack")
    offsets = [0]
    for feeds in requests:
        offsets.append(offsets[-1] + rows(feeds))
    first = requests[0]
    if len(requests) == 1:
        return dict(first), offsets
    names = first.keys()
    for feeds in requests[1:]:
        if feeds.keys() != names:
            raise ValueError(f"requests have different inputs: {sorted(names)} vs {sorted(feeds)}")
    return {name: np.concatenate([feeds[name] for feeds in requests]) for name in names}, offsets


def split(outputs: Mapping[str, np.ndarray], offsets: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Cut batched outputs back into one dict per request (views, no copies).

    Args:
        outputs: One array per output name, each with ``offsets[-1]`` rows.
        offsets: As returned by ``stack``.

    Raises:
        ValueError: an output whose leading dimension is not the batch's row count.
    """
    total = offsets[-1]
    for name, arr in outputs.items():
        shape = getattr(arr, "shape", None)
        got = shape[0] if shape else None
        if got != total:
            what = f"{got} rows" if got is not None else f"no row dimension (shape {shape})"
            raise ValueError(f"output {name!r} has {what} but the batch has {total} rows")
    if len(offsets) == 2:
        return [dict(outputs)]
    return [{name: arr[start:end] for name, arr in outputs.items()} for start, end in pairwise(offsets)]
