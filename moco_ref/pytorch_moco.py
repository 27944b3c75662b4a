"""MoCo in PyTorch: a re-implementation of the official MoCo builder and of the CIFAR ResNet with torchvision's
names, autograd doing the gradients ("PyTorch's twin" of moco-ref in the docs and reports).

It sits beside moco_ref/moco.py, not in moco_ref/bench/, because three parts use the one module:
    * the tests' independent oracle — float64 on the CPU, with the very shuffle permutations our step draws
      (``torch_encoder_like`` copies a moco-ref encoder into it);
    * the benchmarks' comparison — float32 on the CPU or CUDA, random permutations (``TorchMoCo.build``);
      with ``bn_splits = 1`` every BatchNorm is plain ``nn.BatchNorm2d``, the work our reference step does;
    * the network that ``moco-ref export``'s weights load into (``CifarResNet``; moco_ref/tools/export.py).

Written from the descriptions of torchvision's ResNet (BasicBlock; the CIFAR stem: a 3×3 conv, no max-pool),
the MoCo CIFAR-10 demo's SplitBatchNorm and the official builder (moco/builder.py, with the demo's symmetric
loss).  Parameter and buffer names are moco-ref's ``state_dict`` names, so either loads the other's weights.

Imported only where torch is installed and a suite or test needs it; ``import moco_ref`` never imports it.

Notation: N batch, C channels, D feature dimension, K queue size, S BatchNorm splits.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class SplitBatchNorm(nn.BatchNorm2d):
    """The demo's SplitBatchNorm: in training, S interleaved groups (sample n in group n mod S) each normalised
    with its own statistics, running statistics the mean over groups; in eval, and for S = 1, plain BatchNorm."""

    def __init__(self, num_features, num_splits):
        super().__init__(num_features)
        self.num_splits = num_splits

    def forward(self, x):
        N, C, H, W = x.shape
        if self.training and self.num_splits > 1:
            S = self.num_splits
            mean_split = self.running_mean.repeat(S)
            var_split = self.running_var.repeat(S)
            out = F.batch_norm(
                x.view(-1, C * S, H, W),
                mean_split,
                var_split,  # (N/S, S·C, H, W)
                self.weight.repeat(S),
                self.bias.repeat(S),
                True,
                self.momentum,
                self.eps,
            )
            self.running_mean.data.copy_(mean_split.view(S, C).mean(dim=0))
            self.running_var.data.copy_(var_split.view(S, C).mean(dim=0))
            self.num_batches_tracked += 1
            return out.view(N, C, H, W)
        return super().forward(x)


class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN, plus the shortcut (1×1 conv + BN where shapes change); ReLU."""

    def __init__(self, c_in, c_out, stride, splits):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = SplitBatchNorm(c_out, splits)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = SplitBatchNorm(c_out, splits)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), SplitBatchNorm(c_out, splits)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    """torchvision's ResNet with the CIFAR stem and stage widths w, 2w, 4w, 8w; fc (or the MLP head
    fc.0 → ReLU → fc.2) maps the pooled 8w features to D.  ``blocks``: BasicBlocks per stage (ARCHS)."""

    def __init__(self, blocks=(2, 2, 2, 2), width=64, dim=128, mlp=False, splits=1):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = SplitBatchNorm(width, splits)
        self.relu = nn.ReLU()
        c_in = width
        for stage, (count, stride) in enumerate(zip(blocks, (1, 2, 2, 2))):
            c_out = width * 2**stage
            layers = []
            for b in range(count):
                layers.append(BasicBlock(c_in, c_out, stride if b == 0 else 1, splits))
                c_in = c_out
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        fc = nn.Linear(8 * width, dim)
        self.fc = nn.Sequential(nn.Linear(8 * width, 8 * width), nn.ReLU(), fc) if mlp else fc

    def forward(self, x):  # (N, 3, H, W) -> (N, D)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def torch_encoder_like(encoder, dtype=torch.float64) -> CifarResNet:
    """A PyTorch twin of a moco-ref encoder (same architecture, splits and head) in ``dtype`` (float64 unless
    told), on the CPU, loaded strictly with its state_dict."""
    from moco_ref.models import ARCHS

    net = CifarResNet(ARCHS[encoder.arch], encoder.width, encoder.dim, encoder.mlp, encoder.bn_splits).to(dtype)
    state = {k: torch.from_numpy(np.array(encoder.backend.to_host(v))) for k, v in encoder.state_dict().items()}
    net.load_state_dict(state, strict=True)
    return net


class TorchMoCo:
    """The official builder's training step in one process (the demo's symmetric option), with torch.optim.SGD.

    A step, in the demo's order: momentum update θ_k ← m·θ_k + (1 − m)·θ_q (parameters only); per loss term,
    queries, keys of the shuffled batch (shuffle BN) unshuffled, logits [q·k₊, q·queue]/T with the positive in
    column 0, cross-entropy with labels 0; backward; SGD; enqueue the keys.  Symmetric: L(x₁, x₂) + L(x₂, x₁),
    both key sets enqueued.

    Args:
        encoder_q, encoder_k: CifarResNet twins in train mode; encoder_k's parameters are frozen here.
        queue: (D, K) unit keys, one per column as the official buffer (copied).
        ptr: the queue pointer.
        m, T: momentum of the key encoder and temperature; lr, momentum, weight_decay, nesterov: SGD's.
        symmetric: the demo's symmetric loss.
    """

    def __init__(
        self, encoder_q, encoder_k, queue, ptr=0, *, m, T, lr, momentum, weight_decay, symmetric=False, nesterov=False
    ):
        self.encoder_q, self.encoder_k = encoder_q, encoder_k
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.queue = queue.clone()  # (D, K)
        self.ptr, self.m, self.T, self.symmetric = ptr, m, T, symmetric
        self.optimizer = torch.optim.SGD(
            encoder_q.parameters(), lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
        )

    @classmethod
    def build(
        cls,
        blocks,
        width,
        dim=128,
        K=4096,
        *,
        m=0.99,
        T=0.1,
        lr=0.06,
        momentum=0.9,
        weight_decay=5e-4,
        bn_splits=1,
        symmetric=False,
        device="cpu",
        dtype=torch.float32,
    ) -> TorchMoCo:
        """A fresh MoCo for timing: PyTorch's default initialisation, encoder_k a copy of encoder_q, a random
        unit-column queue, all on ``device`` in ``dtype``."""
        encoder_q = CifarResNet(blocks, width, dim, splits=bn_splits).to(device=device, dtype=dtype)
        encoder_k = copy.deepcopy(encoder_q)
        queue = F.normalize(torch.randn(dim, K, device=device, dtype=dtype), dim=0)
        return cls(
            encoder_q,
            encoder_k,
            queue,
            m=m,
            T=T,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            symmetric=symmetric,
        )

    @torch.no_grad()
    def _momentum_update(self):
        for p_q, p_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            p_k.mul_(self.m).add_(p_q, alpha=1.0 - self.m)

    @torch.no_grad()
    def _enqueue(self, keys):
        """Writes keys (B, D) as columns at the pointer, wrapping around: the official slice write where
        K % B == 0 (which the official code asserts), any B ≤ K otherwise."""
        B, K = keys.shape[0], self.queue.shape[1]
        assert B <= K, f"a batch of {B} keys does not fit a queue of {K}"
        index = (self.ptr + torch.arange(B, device=keys.device)) % K
        self.queue[:, index] = keys.T
        self.ptr = (self.ptr + B) % K

    def _loss(self, im_q, im_k, perm):
        """InfoNCE of queries from im_q against keys from im_k; returns (loss, keys (N, D))."""
        q = F.normalize(self.encoder_q(im_q), dim=1)  # (N, D)
        with torch.no_grad():
            k = F.normalize(self.encoder_k(im_k[perm]), dim=1)[torch.argsort(perm)]  # (N, D), unshuffled
        l_pos = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
        l_neg = q @ self.queue  # (N, K)
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T  # (N, 1 + K)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, labels), k

    def step(self, im_q, im_k, perms=None, *, m=None, lr=None):
        """One training step on two views (N, 3, H, W); returns the loss as a 0-d tensor (not read back, so a
        CUDA step does not wait for the host).

        perms: the shuffle permutation of each loss term's key batch (one, or two when symmetric), as our step
        draws them; None draws them with torch.randperm on the images' device.
        m, lr: this step's key-encoder momentum and learning rate, as MoCo.step's (they stay set for the next
        steps); None keeps the current ones.
        """
        if perms is None:
            perms = [torch.randperm(im_k.shape[0], device=im_k.device) for _ in range(2 if self.symmetric else 1)]
        if m is not None:
            self.m = m
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self._momentum_update()
        if self.symmetric:
            loss_12, k2 = self._loss(im_q, im_k, perms[0])
            loss_21, k1 = self._loss(im_k, im_q, perms[1])
            loss, keys = loss_12 + loss_21, torch.cat([k1, k2])
        else:
            loss, keys = self._loss(im_q, im_k, perms[0])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._enqueue(keys)
        return loss.detach()
