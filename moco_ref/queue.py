"""The key queue: a FIFO ring buffer of the K most recent keys.

The queue is the dictionary of negatives.  Enqueueing a batch overwrites the
oldest keys, so the dictionary is always the K keys most recently produced by
the (slowly changing) key encoder.  The write pointer ``queue_ptr`` is a host
integer: moving it never waits on the device.

    slot of the t-th key ever enqueued (t = 0, 1, …) = t mod K
    queue_ptr = (number of keys enqueued) mod K = the slot of the oldest key

The official code asserts K % batch == 0; here any batch size works, including
a batch larger than K (then only its newest K keys stay).
"""

from __future__ import annotations

import numpy as np

from backends import get_array_module, get_backend


class KeyQueue:
    """K unit-norm keys of dimension D, one per row, on a backend.

    Args:
        K: number of keys.
        dim: D, the key dimension.
        backend: "numpy", "cupy" or a Backend.
        seed: seed of the host generator for the initial keys (standard normal, then L2-normalised).
        dtype: float dtype of the keys.

    Attributes:
        keys: (K, D) array; row i is slot i (use :meth:`ordered` for age order).
        ptr: host int, the next slot to write (= the oldest key's slot).
    """

    def __init__(self, K: int, dim: int, backend="numpy", seed: int = 0, dtype="float32"):
        if K < 1 or dim < 1:
            raise ValueError(f"KeyQueue needs K >= 1 and dim >= 1, got K={K}, dim={dim}")
        self.backend = get_backend(backend)
        initial = np.random.default_rng(seed).standard_normal((K, dim))
        initial /= np.linalg.norm(initial, axis=1, keepdims=True)
        self.keys = self.backend.to_device(initial.astype(dtype))
        self.ptr = 0

    @property
    def K(self) -> int:
        return self.keys.shape[0]

    def enqueue(self, keys) -> None:
        """Writes ``keys`` (B, D) over the B oldest slots and advances the pointer by B (mod K)."""
        B, K = keys.shape[0], self.K
        n = min(B, K)  # a batch larger than K keeps only its newest K keys
        newest = keys[B - n :]
        start = (self.ptr + B - n) % K  # slot of the first key that stays
        first = min(n, K - start)  # how many fit before the end of the buffer
        self.keys[start : start + first] = newest[:first]
        self.keys[: n - first] = newest[first:]  # the rest wraps around to the front
        self.ptr = (self.ptr + B) % K

    def ordered(self):
        """The keys from oldest to newest, (K, D)."""
        xp = get_array_module(self.keys)
        return xp.concatenate([self.keys[self.ptr :], self.keys[: self.ptr]], axis=0)

    def state_dict(self) -> dict:
        """The official checkpoint form: ``queue`` (D, K) with one key per column, ``queue_ptr`` (1,) int64."""
        return {"queue": self.keys.T, "queue_ptr": np.array([self.ptr], dtype=np.int64)}

    def load_state_dict(self, state: dict) -> None:
        queue = state["queue"]
        if tuple(queue.shape) != (self.keys.shape[1], self.keys.shape[0]):
            raise ValueError(
                f"queue: shape {tuple(queue.shape)} does not match (D, K) = {(self.keys.shape[1], self.keys.shape[0])}"
            )
        host = np.asarray(queue if isinstance(queue, np.ndarray) else self.backend.to_host(queue))
        self.keys = self.backend.to_device(np.array(host.T, dtype=self.keys.dtype, order="C"))  # a copy, never an alias
        self.ptr = int(np.asarray(state["queue_ptr"]).reshape(-1)[0]) % self.K
