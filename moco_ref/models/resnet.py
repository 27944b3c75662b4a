"""The CIFAR-style ResNet encoder of the MoCo CIFAR-10 demo, forward and backward by hand.

torchvision's ResNet with the stem changed for 32×32 images: conv1 is 3×3,
stride 1, padding 1, no bias, and there is no max-pool.  Then four stages of
BasicBlocks with widths w, 2w, 4w, 8w and strides 1, 2, 2, 2, global average
pooling, and fc (8w -> dim); with ``mlp=True`` the fc becomes MoCo v2's head
Linear(8w, 8w) -> ReLU -> Linear(8w, dim), named ``fc.0`` and ``fc.2``.

    BasicBlock(x) = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
    shortcut(x)   = x, or bn(conv1×1, stride s (x)) when the shape changes

The backward walks the same graph in reverse; at the residual add the
gradient is handed to both branches, and where the branches meet again at x
their gradients are summed.

Parameter and buffer names, shapes and layouts are exactly those of the
equivalent PyTorch module, so ``state_dict()`` loads into it with
``torch.from_numpy`` alone.  Activations are NHWC inside.
"""

from __future__ import annotations

import math

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
from moco_ref.layers.conv import conv2d_backward, conv2d_forward

ARCHS = {"resnet18": (2, 2, 2, 2), "resnet10": (1, 1, 1, 1)}


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
        params: {name: array} trainable parameters, in PyTorch's order.
        buffers: {name: array} BatchNorm running statistics and batch counters.
    """

    def __init__(self, arch="resnet18", dim=128, width=64, mlp=False, bn_splits=1,
                 backend="numpy", seed=0, dtype="float32"):
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        self.arch, self.dim, self.width, self.mlp = arch, dim, width, mlp
        self.bn_splits = bn_splits
        self.backend = get_backend(backend)
        self.dtype = np.dtype(dtype)
        self.blocks = self._block_layout(ARCHS[arch], width)  # [(prefix, c_in, c_out, stride, downsample)]
        self.feature_dim = 8 * width
        self.params, self.buffers = self._init_weights(np.random.default_rng(seed))
        self._cache = None  # the last training forward's cache, replaced by each forward

    # ----------------------------------------------------------------- structure
    @staticmethod
    def _block_layout(blocks_per_stage, width):
        layout, c_in = [], width
        for stage, (count, stride) in enumerate(zip(blocks_per_stage, (1, 2, 2, 2))):
            c_out = width * 2 ** stage
            for b in range(count):
                s = stride if b == 0 else 1
                layout.append((f"layer{stage + 1}.{b}.", c_in, c_out, s, s != 1 or c_in != c_out))
                c_in = c_out
        return layout

    def _init_weights(self, rng):
        """torchvision's initialisation, drawn on the host in state_dict order.

        conv: N(0, 2/fan_out) (Kaiming, fan_out = out·kh·kw); BN: γ = 1, β = 0;
        linear: U(±1/√fan_in) for weight and bias (PyTorch's default).
        """
        params, buffers = {}, {}

        def conv(name, c_out, c_in, k):
            std = math.sqrt(2.0 / (c_out * k * k))
            params[name + ".weight"] = rng.standard_normal((c_out, c_in, k, k)) * std

        def bn(name, c):
            params[name + ".weight"] = np.ones(c)
            params[name + ".bias"] = np.zeros(c)
            buffers[name + ".running_mean"] = np.zeros(c)
            buffers[name + ".running_var"] = np.ones(c)
            buffers[name + ".num_batches_tracked"] = np.zeros((), dtype=np.int64)

        def linear(name, d_out, d_in):
            bound = 1.0 / math.sqrt(d_in)
            params[name + ".weight"] = rng.uniform(-bound, bound, (d_out, d_in))
            params[name + ".bias"] = rng.uniform(-bound, bound, d_out)

        conv("conv1", self.width, 3, 3)
        bn("bn1", self.width)
        for prefix, c_in, c_out, _, downsample in self.blocks:
            conv(prefix + "conv1", c_out, c_in, 3)
            bn(prefix + "bn1", c_out)
            conv(prefix + "conv2", c_out, c_out, 3)
            bn(prefix + "bn2", c_out)
            if downsample:
                conv(prefix + "downsample.0", c_out, c_in, 1)
                bn(prefix + "downsample.1", c_out)
        if self.mlp:
            linear("fc.0", self.feature_dim, self.feature_dim)
            linear("fc.2", self.dim, self.feature_dim)
        else:
            linear("fc", self.dim, self.feature_dim)

        def move(a):
            return self.backend.to_device(a if a.dtype == np.int64 else a.astype(self.dtype))

        return ({k: move(v) for k, v in params.items()}, {k: move(v) for k, v in buffers.items()})

    # ------------------------------------------------------------------- forward
    def forward(self, x, training=True, keep_cache=None):
        """Encodes a batch of images.

        Args:
            x: (N, 3, H, W) images on the backend (NCHW, as PyTorch).
            training: batch statistics and running-statistic updates (True), or
                running statistics (False).
            keep_cache: keep what :meth:`backward` needs (default: when training).  The key
                encoder trains its BatchNorm statistics but never backpropagates, so MoCo
                passes False and saves the memory.
        Returns:
            (N, dim) features (not normalised).
        """
        xp = get_array_module(x)
        h = xp.ascontiguousarray(x.transpose(0, 2, 3, 1))       # (N, H, W, 3)
        keep = training if keep_cache is None else keep_cache
        cache = {} if keep else None
        h = self._conv_bn(h, "conv1", "bn1", 1, 1, True, training, cache)
        for prefix, _, _, stride, downsample in self.blocks:
            h = self._block(h, prefix, stride, downsample, training, cache)
        features, x_shape = global_avg_pool_forward(h)          # (N, 8w)
        out = self._head_forward(features, cache)               # (N, dim)
        if cache is not None:
            cache["pool"] = x_shape
        self._cache = cache
        return out

    def features(self, x):
        """The 8w-dimensional pooled features in eval mode (the encoder without fc), (N, 8w)."""
        xp = get_array_module(x)
        h = xp.ascontiguousarray(x.transpose(0, 2, 3, 1))
        h = self._conv_bn(h, "conv1", "bn1", 1, 1, True, False, None)
        for prefix, _, _, stride, downsample in self.blocks:
            h = self._block(h, prefix, stride, downsample, False, None)
        return global_avg_pool_forward(h)[0]

    def _conv_bn(self, x, conv, bn, stride, padding, relu, training, cache):
        """relu?(bn(conv(x))); records what the backward needs under the conv's name."""
        p = self.params
        y, conv_cache = conv2d_forward(x, p[conv + ".weight"], stride, padding)
        y, running, bn_cache = batchnorm_forward(
            y, p[bn + ".weight"], p[bn + ".bias"], self.buffers[bn + ".running_mean"],
            self.buffers[bn + ".running_var"], training, self.bn_splits)
        if running is not None:
            self.buffers[bn + ".running_mean"], self.buffers[bn + ".running_var"] = running
            self.buffers[bn + ".num_batches_tracked"] = self.buffers[bn + ".num_batches_tracked"] + 1
        mask = None
        if relu:
            y, mask = relu_forward(y)
        if cache is not None:
            cache[conv] = (conv_cache, bn_cache, mask)
        return y

    def _block(self, x, prefix, stride, downsample, training, cache):
        h = self._conv_bn(x, prefix + "conv1", prefix + "bn1", stride, 1, True, training, cache)
        h = self._conv_bn(h, prefix + "conv2", prefix + "bn2", 1, 1, False, training, cache)
        if downsample:
            shortcut = self._conv_bn(x, prefix + "downsample.0", prefix + "downsample.1",
                                     stride, 0, False, training, cache)
        else:
            shortcut = x
        y, mask = relu_forward(h + shortcut)
        if cache is not None:
            cache[prefix + "out"] = mask
        return y

    def _head_forward(self, features, cache):
        p = self.params
        record = cache if cache is not None else {}
        if not self.mlp:
            out, record["fc"] = linear_forward(features, p["fc.weight"], p["fc.bias"])
            return out
        hidden, record["fc.0"] = linear_forward(features, p["fc.0.weight"], p["fc.0.bias"])
        hidden, record["fc.relu"] = relu_forward(hidden)
        out, record["fc.2"] = linear_forward(hidden, p["fc.2.weight"], p["fc.2.bias"])
        return out

    # ------------------------------------------------------------------ backward
    def backward(self, dout):
        """Backpropagates ∂L/∂out through the last training forward.

        Args:
            dout: (N, dim) gradient of the loss with respect to the output.
        Returns:
            {parameter name: gradient}, the same names and shapes as ``params``.
        """
        if self._cache is None:
            raise RuntimeError("backward() needs a preceding forward(x, training=True) that kept its cache")
        cache, grads = self._cache, {}
        d_features = self._head_backward(dout, cache, grads)
        dh = global_avg_pool_backward(d_features, cache["pool"])
        for prefix, _, _, _, downsample in reversed(self.blocks):
            dh = self._block_backward(dh, prefix, downsample, cache, grads)
        self._conv_bn_backward(dh, "conv1", "bn1", cache, grads, need_dx=False)
        self._cache = None  # the graph is used once, as in PyTorch
        return {name: grads[name] for name in self.params}  # PyTorch's order

    def _conv_bn_backward(self, dy, conv, bn, cache, grads, need_dx=True):
        conv_cache, bn_cache, mask = cache[conv]
        if mask is not None:
            dy = relu_backward(dy, mask)
        dy, grads[bn + ".weight"], grads[bn + ".bias"] = batchnorm_backward(dy, bn_cache)
        dx, grads[conv + ".weight"] = conv2d_backward(dy, conv_cache, need_dx)
        return dx

    def _block_backward(self, dy, prefix, downsample, cache, grads):
        d_sum = relu_backward(dy, cache[prefix + "out"])   # reaches both branches
        dh = self._conv_bn_backward(d_sum, prefix + "conv2", prefix + "bn2", cache, grads)
        dx = self._conv_bn_backward(dh, prefix + "conv1", prefix + "bn1", cache, grads)
        if downsample:
            return dx + self._conv_bn_backward(d_sum, prefix + "downsample.0",
                                               prefix + "downsample.1", cache, grads)
        return dx + d_sum

    def _head_backward(self, dout, cache, grads):
        if not self.mlp:
            d_features, grads["fc.weight"], grads["fc.bias"] = linear_backward(dout, cache["fc"])
            return d_features
        d_hidden, grads["fc.2.weight"], grads["fc.2.bias"] = linear_backward(dout, cache["fc.2"])
        d_hidden = relu_backward(d_hidden, cache["fc.relu"])
        d_features, grads["fc.0.weight"], grads["fc.0.bias"] = linear_backward(d_hidden, cache["fc.0"])
        return d_features

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
