"""The CIFAR-style ResNet encoder of the MoCo CIFAR-10 demo, forward and backward by hand.

torchvision's ResNet with the stem changed for 32×32 images: conv1 is 3×3,
stride 1, padding 1, no bias, and there is no max-pool.  Then four stages of
BasicBlocks with widths w, 2w, 4w, 8w and strides 1, 2, 2, 2, global average
pooling, and fc (8w -> dim); with ``mlp=True`` the fc becomes MoCo v2's head
Linear(8w, 8w) -> ReLU -> Linear(8w, dim), named ``fc.0`` and ``fc.2``.

    BasicBlock(x) = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
    shortcut(x)   = x, or bn(conv1×1, stride s (x)) when the shape changes

One table, :func:`resnet_layout`, lists every layer (name, channels, kernel,
stride, padding, ReLU or not); forward, backward and the FLOP count of the
benchmarks all walk it.  The residual add and the ReLU after it belong to conv2's
BatchNorm (one output pass, layers/batchnorm.py).  The backward walks the table in
reverse; at the residual add the gradient is handed to both branches, and where
the branches meet again at x their gradients are summed.

State is explicit: ``params`` and ``buffers`` are the encoder's only state.
``forward`` returns the output, the cache its backward needs and the new
BatchNorm running statistics; it writes nothing into the encoder, and the
caller decides whether to keep the new statistics.

Parameter and buffer names, shapes and layouts are exactly those of the
equivalent PyTorch module, so ``state_dict()`` loads into it with
``torch.from_numpy`` alone.  Activations are NHWC inside.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from backends import get_array_module, get_backend
from moco_ref.layers.basic import (
    global_avg_pool_backward,
    global_avg_pool_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
)
from moco_ref.layers.batchnorm import batchnorm_backward, batchnorm_forward
from moco_ref.layers.conv import conv2d_backward, conv2d_forward, conv_output_size

ARCHS = {"resnet18": (2, 2, 2, 2), "resnet10": (1, 1, 1, 1)}


# ------------------------------------------------------------------ the table of layers
class ConvBN(NamedTuple):
    """relu?(bn(conv(x)) + residual): one convolution (no bias) and its BatchNorm; a block's conv2 row
    takes the shortcut as its residual, and its ReLU comes after that add."""

    conv: str  # parameter name prefix of the convolution, e.g. "layer2.0.conv1"
    bn: str  # of its BatchNorm, e.g. "layer2.0.bn1"
    c_in: int
    c_out: int
    kernel: int
    stride: int
    padding: int
    relu: bool


class Block(NamedTuple):
    """BasicBlock: relu(bn2(conv2(h)) + shortcut(x)), h = relu(bn1(conv1(x))), shortcut = downsample(x) or x."""

    name: str  # e.g. "layer2.0"
    conv1: ConvBN
    conv2: ConvBN
    downsample: ConvBN | None


class Linear(NamedTuple):
    name: str  # "fc", or "fc.0" and "fc.2" of the MLP head
    d_in: int
    d_out: int
    relu: bool


class Layout(NamedTuple):
    stem: ConvBN
    blocks: tuple  # of Block
    head: tuple  # of Linear


def resnet_layout(arch: str, width: int, dim: int, mlp: bool) -> Layout:
    """Every layer of the CIFAR ResNet, in forward order."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    stem = ConvBN("conv1", "bn1", 3, width, 3, 1, 1, relu=True)
    blocks, c_in = [], width
    for stage, (count, first_stride) in enumerate(zip(ARCHS[arch], (1, 2, 2, 2))):
        c_out = width * 2**stage
        for b in range(count):
            name, s = f"layer{stage + 1}.{b}", first_stride if b == 0 else 1
            downsample = None
            if s != 1 or c_in != c_out:
                downsample = ConvBN(f"{name}.downsample.0", f"{name}.downsample.1", c_in, c_out, 1, s, 0, False)
            blocks.append(
                Block(
                    name,
                    ConvBN(f"{name}.conv1", f"{name}.bn1", c_in, c_out, 3, s, 1, True),
                    ConvBN(f"{name}.conv2", f"{name}.bn2", c_out, c_out, 3, 1, 1, True),
                    downsample,
                )
            )
            c_in = c_out
    features = 8 * width
    head = (
        (Linear("fc.0", features, features, True), Linear("fc.2", features, dim, False))
        if mlp
        else (Linear("fc", features, dim, False),)
    )
    return Layout(stem, tuple(blocks), head)


def conv_layers(layout: Layout) -> list:
    """The ConvBN rows of the table in forward order (stem, then each block's conv1, conv2, downsample)."""
    rows = [layout.stem]
    for block in layout.blocks:
        rows += [block.conv1, block.conv2] + ([block.downsample] if block.downsample else [])
    return rows


def conv_sides(layout: Layout, size: int) -> list:
    """(ConvBN row, input side, output side) of every convolution, in forward order, for size×size images."""
    rows, side = [], size

    def add(layer, side_in):
        side_out = conv_output_size(side_in, layer.kernel, layer.stride, layer.padding)
        rows.append((layer, side_in, side_out))
        return side_out

    side = add(layout.stem, side)
    for block in layout.blocks:
        block_in = side
        side = add(block.conv2, add(block.conv1, block_in))
        if block.downsample is not None:
            add(block.downsample, block_in)
    return rows


class Forward(NamedTuple):
    """What :meth:`ResNetEncoder.forward` returns."""

    out: object  # (N, dim) features, not normalised
    cache: dict | None  # what backward needs (None when not kept)
    buffers: dict  # BatchNorm running statistics after this forward (the same dict in eval mode)


# ------------------------------------------------------------------ the encoder
class ResNetEncoder:
    """A CIFAR ResNet with hand-written backward.

    Args:
        arch: "resnet18" ([2, 2, 2, 2] blocks) or "resnet10" ([1, 1, 1, 1]).
        dim: output feature dimension (fc out).
        width: base width w (64 is standard; 16, 8 or 4 for CPU work and tests).
        mlp: MoCo v2's two-layer head instead of one fc.
        bn_splits: S of split BatchNorm (1 = plain BatchNorm).
        backend: "numpy", "cupy" or a Backend.
        seed: seed of the host generator that draws the initial weights.
        dtype: "float32" or "float64".

    Attributes:
        layout: the table of layers (:func:`resnet_layout`).
        params: {name: array} trainable parameters, in PyTorch's order.
        buffers: {name: array} BatchNorm running statistics and batch counters.
    """

    def __init__(
        self, arch="resnet18", dim=128, width=64, mlp=False, bn_splits=1, backend="numpy", seed=0, dtype="float32"
    ):
        self.arch, self.dim, self.width, self.mlp = arch, dim, width, mlp
        self.bn_splits = bn_splits
        self.seed = seed
        self.backend = get_backend(backend)
        self.dtype = np.dtype(dtype)
        self.layout = resnet_layout(arch, width, dim, mlp)
        self.feature_dim = 8 * width
        self.params, self.buffers = self._init_weights(np.random.default_rng(seed))

    def _init_weights(self, rng):
        """torchvision's initialisation, drawn on the host in state_dict order.

        conv: N(0, 2/fan_out) (Kaiming, fan_out = out·kh·kw); BN: γ = 1, β = 0;
        linear: U(±1/√fan_in) for weight and bias (PyTorch's default).
        """
        params, buffers = {}, {}
        for layer in conv_layers(self.layout):
            k = layer.kernel
            params[layer.conv + ".weight"] = rng.standard_normal((layer.c_out, layer.c_in, k, k)) * math.sqrt(
                2.0 / (layer.c_out * k * k)
            )
            params[layer.bn + ".weight"] = np.ones(layer.c_out)
            params[layer.bn + ".bias"] = np.zeros(layer.c_out)
            buffers[layer.bn + ".running_mean"] = np.zeros(layer.c_out)
            buffers[layer.bn + ".running_var"] = np.ones(layer.c_out)
            buffers[layer.bn + ".num_batches_tracked"] = np.zeros((), dtype=np.int64)
        for layer in self.layout.head:
            bound = 1.0 / math.sqrt(layer.d_in)
            params[layer.name + ".weight"] = rng.uniform(-bound, bound, (layer.d_out, layer.d_in))
            params[layer.name + ".bias"] = rng.uniform(-bound, bound, layer.d_out)

        def move(a):
            return self.backend.to_device(a if a.dtype == np.int64 else a.astype(self.dtype))

        return ({k: move(v) for k, v in params.items()}, {k: move(v) for k, v in buffers.items()})

    def copy(self) -> ResNetEncoder:
        """An independent encoder with equal parameters and buffers: no array is shared."""
        twin = ResNetEncoder(
            self.arch, self.dim, self.width, self.mlp, self.bn_splits, self.backend, self.seed, self.dtype
        )
        twin.load_state_dict(self.state_dict())
        return twin

    # ------------------------------------------------------------------- forward
    def forward(self, x, training=True, keep_cache=None) -> Forward:
        """Encodes a batch of images.

        Args:
            x: (N, 3, H, W) images on the backend (NCHW, as PyTorch).
            training: batch statistics and new running statistics (True), or running statistics (False).
            keep_cache: keep what :meth:`backward` needs (default: when training).  The key encoder
                trains its BatchNorm statistics but never backpropagates, so MoCo passes False and
                saves the memory.
        Returns:
            Forward(out (N, dim), cache or None, buffers): ``buffers`` is a new dict with the updated
            running statistics when training (``self.buffers`` is not touched), else ``self.buffers``.
        """
        xp = get_array_module(x)
        h = xp.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (N, H, W, 3)
        buffers = dict(self.buffers) if training else self.buffers
        cache: dict | None = {} if (training if keep_cache is None else keep_cache) else None
        h = self._conv_bn(self.layout.stem, h, training, buffers, cache)
        for block in self.layout.blocks:
            h = self._block(block, h, training, buffers, cache)
        h, pool_cache = global_avg_pool_forward(h)  # (N, 8w)
        for layer in self.layout.head:
            h = self._linear(layer, h, cache)  # ... -> (N, dim)
        if cache is not None:
            cache["pool"] = pool_cache
        return Forward(h, cache, buffers)

    def features(self, x):
        """The 8w-dimensional pooled features in eval mode (the encoder without fc), (N, 8w)."""
        xp = get_array_module(x)
        h = xp.ascontiguousarray(x.transpose(0, 2, 3, 1))
        h = self._conv_bn(self.layout.stem, h, False, self.buffers, None)
        for block in self.layout.blocks:
            h = self._block(block, h, False, self.buffers, None)
        return global_avg_pool_forward(h)[0]

    def _conv_bn(self, layer: ConvBN, x, training, buffers, cache, residual=None):
        """relu?(bn(conv(x)) + residual); new running statistics go into ``buffers``, the backward's needs
        into ``cache``.  The residual add and the ReLU are part of the BatchNorm's output pass."""
        p = self.params
        y, conv_cache = conv2d_forward(x, p[layer.conv + ".weight"], layer.stride, layer.padding)
        y, running, bn_cache = batchnorm_forward(
            y,
            p[layer.bn + ".weight"],
            p[layer.bn + ".bias"],
            buffers[layer.bn + ".running_mean"],
            buffers[layer.bn + ".running_var"],
            training,
            self.bn_splits,
            residual,
            layer.relu,
        )
        if running is not None:
            buffers[layer.bn + ".running_mean"], buffers[layer.bn + ".running_var"] = running
            buffers[layer.bn + ".num_batches_tracked"] = buffers[layer.bn + ".num_batches_tracked"] + 1
        if cache is not None:
            cache[layer.conv] = (conv_cache, bn_cache)
        return y

    def _block(self, block: Block, x, training, buffers, cache):
        """relu(bn2(conv2(h)) + shortcut(x)), h = relu(bn1(conv1(x))): the add and its ReLU close conv2's BatchNorm."""
        h = self._conv_bn(block.conv1, x, training, buffers, cache)
        shortcut = x if block.downsample is None else self._conv_bn(block.downsample, x, training, buffers, cache)
        return self._conv_bn(block.conv2, h, training, buffers, cache, residual=shortcut)

    def _linear(self, layer: Linear, x, cache):
        y, linear_cache = linear_forward(x, self.params[layer.name + ".weight"], self.params[layer.name + ".bias"])
        if layer.relu:
            y = relu_forward(y)
        if cache is not None:
            cache[layer.name] = (linear_cache, y if layer.relu else None)
        return y

    # ------------------------------------------------------------------ backward
    def backward(self, dout, cache) -> dict:
        """Backpropagates ∂L/∂out through the forward that produced ``cache``.

        Args:
            dout: (N, dim) gradient of the loss with respect to the output.
            cache: ``forward(x, training=True).cache``.
        Returns:
            {parameter name: gradient}, the same names and order as ``params``.
        """
        if cache is None:
            raise ValueError("backward() needs the cache of a forward(x, training=True) that kept it")
        grads: dict = {}
        dh = dout
        for layer in reversed(self.layout.head):
            dh = self._linear_backward(layer, dh, cache, grads)
        dh = global_avg_pool_backward(dh, cache["pool"])
        for block in reversed(self.layout.blocks):
            dh = self._block_backward(block, dh, cache, grads)
        self._conv_bn_backward(self.layout.stem, dh, cache, grads, need_dx=False)
        return {name: grads[name] for name in self.params}

    def _conv_bn_backward(self, layer: ConvBN, dy, cache, grads, need_dx=True):
        """Returns (∂L/∂x, ∂L/∂residual); the second is the gradient at the BatchNorm's output after the ReLU's
        mask, which the residual add hands to the shortcut unchanged."""
        conv_cache, bn_cache = cache[layer.conv]
        dy, grads[layer.bn + ".weight"], grads[layer.bn + ".bias"], d_residual = batchnorm_backward(dy, bn_cache)
        dx, grads[layer.conv + ".weight"] = conv2d_backward(dy, conv_cache, need_dx)
        return dx, d_residual

    def _block_backward(self, block: Block, dy, cache, grads):
        dh, d_sum = self._conv_bn_backward(block.conv2, dy, cache, grads)  # d_sum reaches both branches of the add
        dx, _ = self._conv_bn_backward(block.conv1, dh, cache, grads)
        d_shortcut = (
            d_sum if block.downsample is None else self._conv_bn_backward(block.downsample, d_sum, cache, grads)[0]
        )
        return dx + d_shortcut  # the two branches meet again at x

    def _linear_backward(self, layer: Linear, dy, cache, grads):
        linear_cache, y = cache[layer.name]
        if y is not None:
            dy = relu_backward(dy, y)
        dx, grads[layer.name + ".weight"], grads[layer.name + ".bias"] = linear_backward(dy, linear_cache)
        return dx

    # --------------------------------------------------------------------- state
    def state_dict(self):
        """{name: array}: parameters and buffers interleaved in PyTorch's order (arrays are not copied)."""
        state = {}
        for name in self.params:
            state[name] = self.params[name]
            if name.endswith(".bias") and name[:-5] + ".running_mean" in self.buffers:
                layer = name[:-5]
                for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                    state[f"{layer}.{buffer}"] = self.buffers[f"{layer}.{buffer}"]
        return state

    def load_state_dict(self, state):
        """Copies arrays (host or device) into this encoder; names and shapes must match exactly."""
        expected = set(self.params) | set(self.buffers)
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise KeyError(f"state_dict mismatch: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        for store in (self.params, self.buffers):
            for name, current in store.items():
                value = state[name]
                if tuple(value.shape) != tuple(current.shape):
                    raise ValueError(f"{name}: shape {tuple(value.shape)} does not match {tuple(current.shape)}")
                host = value if isinstance(value, np.ndarray) else self.backend.to_host(value)
                store[name] = self.backend.to_device(np.array(host, dtype=current.dtype))
