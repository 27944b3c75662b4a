"""Properties of the key queue: a FIFO ring buffer of the K most recent keys.

Notation: K slots, D key dimension, B the size of one enqueued batch.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moco_ref.loss import info_nce_forward, normalize_forward
from moco_ref.momentum import momentum_update_
from moco_ref.queue import KeyQueue


def draw_queue_and_batches(data, dtype=np.float64):
    """Draws a KeyQueue and a list of key batches of random sizes (B > K and K % B ≠ 0 included)."""
    K = data.draw(st.integers(1, 8), label="K")
    D = data.draw(st.integers(1, 3), label="D")
    sizes = data.draw(st.lists(st.integers(1, 2 * K + 1), max_size=6), label="batch sizes")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    queue = KeyQueue(K, D, seed=seed, dtype=dtype)
    batches = [rng.standard_normal((B, D)).astype(dtype) for B in sizes]
    return queue, batches


@given(data=st.data())
def test_queue_holds_the_last_K_keys_oldest_first(data):
    """After any enqueues, ordered() is the last K rows of (initial keys ++ every enqueued key), oldest first."""
    queue, batches = draw_queue_and_batches(data)
    history = [queue.ordered().copy()]
    for batch in batches:
        queue.enqueue(batch)
        history.append(batch)
    expected = np.concatenate(history, axis=0)[-queue.K :]
    np.testing.assert_array_equal(
        queue.ordered(), expected, err_msg=f"K={queue.K}, batch sizes {[len(b) for b in batches]}"
    )


@given(data=st.data())
def test_queue_pointer_is_total_enqueued_mod_K(data):
    """queue.ptr is a host int equal to the number of keys enqueued so far, mod K."""
    queue, batches = draw_queue_and_batches(data)
    for batch in batches:
        queue.enqueue(batch)
    assert isinstance(queue.ptr, int)
    assert queue.ptr == sum(len(b) for b in batches) % queue.K


@given(data=st.data())
def test_queue_state_dict_round_trip_restores_keys_and_pointer(data):
    """Loading state_dict() into a fresh queue restores the keys and the pointer, in the official layout.

    The layout is ``queue`` (D, K), one key per column, and ``queue_ptr`` int64 of shape (1,);
    the restored queue then evolves exactly like the original under further enqueues.
    """
    queue, batches = draw_queue_and_batches(data)
    for batch in batches:
        queue.enqueue(batch)
    state = queue.state_dict()
    K, D = queue.keys.shape
    assert state["queue"].shape == (D, K)
    assert state["queue_ptr"].dtype == np.int64 and state["queue_ptr"].shape == (1,)
    restored = KeyQueue(
        K, D, seed=data.draw(st.integers(0, 2**16), label="seed of the fresh queue"), dtype=queue.keys.dtype
    )
    restored.load_state_dict(state)
    assert restored.ptr == queue.ptr
    np.testing.assert_array_equal(restored.ordered(), queue.ordered())
    more = np.random.default_rng(0).standard_normal((data.draw(st.integers(1, 2 * K + 1), label="B after"), D))
    queue.enqueue(more)
    restored.enqueue(more)
    assert restored.ptr == queue.ptr
    np.testing.assert_array_equal(restored.ordered(), queue.ordered())


def test_loaded_queue_does_not_share_memory_with_its_source():
    """A queue loaded from another queue's state_dict() owns its keys: enqueueing into one leaves the other
    unchanged."""
    source, restored = KeyQueue(8, 4, seed=0, dtype=np.float64), KeyQueue(8, 4, seed=1, dtype=np.float64)
    restored.load_state_dict(source.state_dict())
    before = restored.ordered().copy()
    source.enqueue(np.full((1, 4), 7.0))
    assert not np.shares_memory(restored.keys, source.keys)
    np.testing.assert_array_equal(restored.ordered(), before)


@given(data=st.data())
def test_queue_keys_have_unit_norm(data):
    """Every key has unit L2 norm, initially and after enqueues of normalised keys (within (D + 2)·ε)."""
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    queue, batches = draw_queue_and_batches(data, dtype)
    tolerance = (queue.keys.shape[1] + 2) * np.finfo(dtype).eps
    np.testing.assert_allclose(
        np.linalg.norm(queue.keys.astype(np.float64), axis=1), 1.0, rtol=0, atol=tolerance, err_msg="initial keys"
    )
    for batch in batches:
        queue.enqueue(normalize_forward(batch)[0])
    np.testing.assert_allclose(
        np.linalg.norm(queue.keys.astype(np.float64), axis=1), 1.0, rtol=0, atol=tolerance, err_msg="after enqueues"
    )


@given(seed=st.integers(0, 2**16), bn_splits=st.sampled_from([1, 2]))
def test_step_logits_use_the_queue_before_the_step(small_moco, two_views, seed, bn_splits):
    """The loss of MoCo.step is InfoNCE against the queue as it was before the step, not after its enqueue.

    A twin model (same seed) computes q and k by hand, as the step does; its queue is
    untouched, i.e. the pre-step queue.  The step's loss must equal the loss against
    that queue and differ from the loss against the post-step queue, which holds the
    batch's own keys as negatives.
    """
    model, twin = small_moco(seed, bn_splits), small_moco(seed, bn_splits)
    x_q, x_k = two_views(seed)
    loss = float(model.step(x_q, x_k)["loss"])
    momentum_update_(twin.encoder_k.params, twin.encoder_q.params, twin.m)
    q = normalize_forward(twin.encoder_q.forward(x_q, training=True).out)[0]
    k = twin.encode_keys(x_k)[0]
    loss_before = float(info_nce_forward(q, k, twin.queue.keys, twin.T)[0])
    loss_after = float(info_nce_forward(q, k, model.queue.keys, twin.T)[0])
    assert loss == pytest.approx(loss_before, rel=1e-12), f"step {loss!r}, pre-step queue {loss_before!r}"
    assert abs(loss - loss_after) > 1e-6, f"step {loss!r} equals the post-step queue's {loss_after!r}"
