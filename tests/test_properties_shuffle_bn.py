"""Properties of shuffle BN: the keys are computed as k = unshuffle(normalize(f_k(shuffle(x_k)))).

Notation: N the batch size, S the BatchNorm groups (bn_splits; sample n of the batch the key encoder sees
is in group n mod S), perm the permutation batch_shuffle draws, rng.permutation(N).  On one process
(SingleProcess) batch_shuffle returns x[perm] and index_unshuffle = argsort(perm), so group g of the
permuted batch is the original samples perm[g::S].

The MoCo tests use the conftest's tiny float64 MoCo (resnet10 of width 2) on 16×16 images, so that
even a group of one sample has 2×2 = 4 values per channel in its last stage.
"""

import copy

import numpy as np
from helpers import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from moco_ref.loss import normalize_forward
from moco_ref.models import build_encoder
from moco_ref.parallel.communicator import SingleProcess
from moco_ref.shuffle import batch_shuffle, batch_unshuffle

RTOL = 1e-12  # float64: summing a group in another order changes only the last bits
IMAGE_SIDE = 16
MOCO_EXAMPLES = settings(max_examples=20, deadline=None)  # each example runs the key encoder a few times


def draw_batch(data):
    """x (N, ...) of any dtype, N ≥ 0 and any trailing shape, and a generator for the permutation."""
    N = data.draw(st.integers(0, 12), label="N")
    trailing = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3), label="trailing shape")
    dtype = data.draw(st.sampled_from([np.float64, np.float32, np.int64]), label="dtype")
    x = data.draw(hnp.arrays(dtype, (N, *trailing)), label="x")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed of the permutation"))
    return x, rng


def rows(x):
    """The multiset of x's rows, as sorted byte strings (exact: NaN and −0.0 included)."""
    return sorted(row.tobytes() for row in x.reshape(x.shape[0], int(np.prod(x.shape[1:]))))


def draw_images(data, S):
    """x_k (N, 3, 16, 16) float64 images with N = S·(samples per group) ≤ 12."""
    per_group = data.draw(st.integers(1, 12 // S), label="samples per group")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed of the images"))
    return rng.standard_normal((S * per_group, 3, IMAGE_SIDE, IMAGE_SIDE))


def plain_bn_twin(encoder_k):
    """An encoder with encoder_k's parameters and buffers and one BatchNorm group (bn_splits = 1)."""
    twin = build_encoder(
        encoder_k.arch, dim=encoder_k.dim, width=encoder_k.width, mlp=encoder_k.mlp, bn_splits=1, dtype=encoder_k.dtype
    )
    twin.load_state_dict(encoder_k.state_dict())
    return twin


def assert_buffers_close(actual, expected, what):
    assert actual.keys() == expected.keys(), f"{what}: other buffer names"
    for name in expected:
        assert_close(actual[name], expected[name], RTOL, f"{what}: {name}")


# ------------------------------------------------------------- the permutation itself
@given(data=st.data())
def test_unshuffle_of_shuffle_is_the_identity(data):
    """batch_unshuffle(batch_shuffle(x)) is x bit for bit, and the shuffled batch holds the same multiset of rows."""
    x, rng = draw_batch(data)
    comm = SingleProcess()
    shuffled, index_unshuffle = batch_shuffle(x, rng, comm)
    assert shuffled.shape == x.shape and shuffled.dtype == x.dtype
    assert rows(shuffled) == rows(x), "the shuffled batch is not a permutation of the rows of x"
    np.testing.assert_array_equal(batch_unshuffle(shuffled, index_unshuffle, comm), x, err_msg=f"N={x.shape[0]}")


@given(data=st.data())
def test_shuffle_reorders_the_rows_by_the_generators_permutation(data):
    """batch_shuffle returns x[perm] for perm = rng.permutation(N), and index_unshuffle is perm's inverse.

    This is what makes the identity above not trivially true (a shuffle that leaves x as it is would pass
    it), and it is how the tests below know the permutation: they draw it from a copy of the generator.
    """
    x, rng = draw_batch(data)
    N = x.shape[0]
    perm = copy.deepcopy(rng).permutation(N)
    shuffled, index_unshuffle = batch_shuffle(x, rng, SingleProcess())
    np.testing.assert_array_equal(shuffled, x[perm], err_msg=f"N={N}, perm={perm}")
    np.testing.assert_array_equal(perm[index_unshuffle], np.arange(N), err_msg=f"perm={perm}")


# ------------------------------------------------------------- shuffle BN in MoCo's keys
@MOCO_EXAMPLES
@given(data=st.data())
def test_keys_with_one_bn_group_do_not_depend_on_the_permutation(data, small_moco):
    """With bn_splits = 1, MoCo's shuffled keys and new running statistics of encoder_k equal those of the
    batch encoded in its own order, whatever permutation is drawn."""
    model = small_moco(data.draw(st.integers(0, 2**16), label="seed of the model"), bn_splits=1)
    model.shuffle_rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed of the permutation"))
    x_k = draw_images(data, S=1)
    direct = model.encoder_k.forward(x_k, training=True, keep_cache=False)
    keys, _ = model.encode_keys(x_k)
    assert_close(keys, normalize_forward(direct.out)[0], RTOL, f"keys of N={len(x_k)}")
    assert_buffers_close(model.encoder_k.buffers, direct.buffers, "running statistics")


@MOCO_EXAMPLES
@given(data=st.data())
def test_keys_with_several_bn_groups_are_each_group_normalised_on_its_own(data, small_moco):
    """With bn_splits = S, the keys and running statistics are those of each group perm[g::S] encoded alone with
    plain BN, the keys put back at their samples' places and the statistics averaged over the groups."""
    S = data.draw(st.integers(2, 4), label="S groups")
    model = small_moco(data.draw(st.integers(0, 2**16), label="seed of the model"), bn_splits=S)
    model.shuffle_rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed of the permutation"))
    x_k = draw_images(data, S)
    N = len(x_k)
    perm = copy.deepcopy(model.shuffle_rng).permutation(N)
    twin = plain_bn_twin(model.encoder_k)
    expected_keys, group_buffers = np.empty((N, model.encoder_k.dim)), []
    for g in range(S):
        members = perm[g::S]  # the original samples in group g
        group = twin.forward(x_k[members], training=True, keep_cache=False)
        expected_keys[members] = normalize_forward(group.out)[0]
        group_buffers.append(group.buffers)
    keys, _ = model.encode_keys(x_k)
    assert_close(keys, expected_keys, RTOL, f"keys, S={S}, perm={perm}")
    expected_buffers = {name: np.mean([b[name] for b in group_buffers], axis=0) for name in twin.buffers}
    assert_buffers_close(model.encoder_k.buffers, expected_buffers, f"running statistics, S={S}")


def test_keys_with_several_bn_groups_change_with_the_grouping(small_moco):
    """With bn_splits = 2, two permutations that group the samples differently give different keys."""
    x_k = np.random.default_rng(0).standard_normal((4, 3, IMAGE_SIDE, IMAGE_SIDE))
    keys, groupings = [], []
    for seed in (0, 1):
        model = small_moco(0, bn_splits=2)
        model.shuffle_rng = np.random.default_rng(seed)
        perm = copy.deepcopy(model.shuffle_rng).permutation(4)
        groupings.append({frozenset(perm[g::2].tolist()) for g in range(2)})
        keys.append(model.encode_keys(x_k)[0])
    assert groupings[0] != groupings[1], f"the two permutations group the samples alike: {groupings}"
    difference = float(np.abs(keys[0] - keys[1]).max())  # keys have unit norm: an absolute scale
    assert difference > 1e-3, f"keys of groupings {groupings} differ by only {difference:.2e}"


@MOCO_EXAMPLES
@given(data=st.data())
def test_without_shuffle_bn_each_key_is_normalised_in_its_querys_group(data, small_moco):
    """With shuffle_bn off (the paper's control), sample n's key is normalised in group n mod S, the group its
    query is in: the keys are those of the batch encoded in its own order, and no permutation is drawn."""
    S = data.draw(st.integers(1, 4), label="S groups")
    model = small_moco(data.draw(st.integers(0, 2**16), label="seed of the model"), bn_splits=S)
    model.shuffle_bn = False
    x_k = draw_images(data, S)
    state = copy.deepcopy(model.shuffle_rng.bit_generator.state)
    direct = model.encoder_k.copy().forward(x_k, training=True, keep_cache=False)
    keys, keys_all = model.encode_keys(x_k)
    np.testing.assert_array_equal(keys, normalize_forward(direct.out)[0])
    np.testing.assert_array_equal(keys_all, keys)  # one process: the whole batch
    assert_buffers_close(model.encoder_k.buffers, direct.buffers, "running statistics")
    assert model.shuffle_rng.bit_generator.state == state, "no permutation may be drawn without shuffle BN"
