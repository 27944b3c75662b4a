"""PyTorch re-implementations used as independent oracles (test-only; torch is never a runtime dependency).

Written from the descriptions of torchvision's ResNet, the MoCo CIFAR-10 demo's
SplitBatchNorm and the official MoCo builder; autograd supplies the gradients
that moco-ref derives by hand.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class SplitBatchNorm(nn.BatchNorm2d):
    """The demo's SplitBatchNorm: S interleaved groups in training, plain BN in eval."""

    def __init__(self, num_features, num_splits):
        super().__init__(num_features)
        self.num_splits = num_splits

    def forward(self, x):
        N, C, H, W = x.shape
        if self.training and self.num_splits > 1:
            S = self.num_splits
            mean_split = self.running_mean.repeat(S)
            var_split = self.running_var.repeat(S)
            out = F.batch_norm(x.view(-1, C * S, H, W), mean_split, var_split,
                               self.weight.repeat(S), self.bias.repeat(S), True, self.momentum, self.eps)
            self.running_mean.data.copy_(mean_split.view(S, C).mean(dim=0))
            self.running_var.data.copy_(var_split.view(S, C).mean(dim=0))
            self.num_batches_tracked += 1
            return out.view(N, C, H, W)
        return super().forward(x)


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride, splits):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = SplitBatchNorm(c_out, splits)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = SplitBatchNorm(c_out, splits)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            SplitBatchNorm(c_out, splits))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    def __init__(self, blocks=(2, 2, 2, 2), width=64, dim=128, mlp=False, splits=1):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = SplitBatchNorm(width, splits)
        self.relu = nn.ReLU()
        c_in = width
        for stage, (count, stride) in enumerate(zip(blocks, (1, 2, 2, 2))):
            c_out = width * 2 ** stage
            layers = []
            for b in range(count):
                layers.append(BasicBlock(c_in, c_out, stride if b == 0 else 1, splits))
                c_in = c_out
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        fc = nn.Linear(8 * width, dim)
        self.fc = nn.Sequential(nn.Linear(8 * width, 8 * width), nn.ReLU(), fc) if mlp else fc

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def torch_encoder_like(encoder) -> CifarResNet:
    """A float64 PyTorch twin of a moco-ref encoder, loaded with its state_dict (strict)."""
    from moco_ref.models import ARCHS

    net = CifarResNet(ARCHS[encoder.arch], encoder.width, encoder.dim, encoder.mlp, encoder.bn_splits).double()
    state = {k: torch.from_numpy(np.array(v)) for k, v in encoder.state_dict().items()}
    net.load_state_dict(state, strict=True)
    return net


class TorchMoCo:
    """The official builder's logic (single process, the demo's symmetric option), in PyTorch."""

    def __init__(self, encoder_q, encoder_k, queue_dk, ptr, m, T, lr, momentum, wd, symmetric=False):
        self.encoder_q, self.encoder_k = encoder_q, encoder_k
        self.queue = queue_dk.clone()          # (D, K), one key per column, as the official buffer
        self.ptr, self.m, self.T, self.symmetric = ptr, m, T, symmetric
        self.optimizer = torch.optim.SGD(encoder_q.parameters(), lr, momentum=momentum, weight_decay=wd)

    @torch.no_grad()
    def _momentum_update(self):
        for p_q, p_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            p_k.data = p_k.data * self.m + p_q.data * (1.0 - self.m)

    @torch.no_grad()
    def _enqueue(self, keys):
        B, K = keys.shape[0], self.queue.shape[1]
        assert K % B == 0, "the official code's assumption"
        self.queue[:, self.ptr:self.ptr + B] = keys.T
        self.ptr = (self.ptr + B) % K

    def _loss(self, im_q, im_k, perm):
        q = F.normalize(self.encoder_q(im_q), dim=1)
        with torch.no_grad():
            k = F.normalize(self.encoder_k(im_k[perm]), dim=1)[torch.argsort(perm)]
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long)
        return F.cross_entropy(logits, labels), k

    def step(self, im_q, im_k, perms):
        self._momentum_update()
        if self.symmetric:
            loss_12, k2 = self._loss(im_q, im_k, perms[0])
            loss_21, k1 = self._loss(im_k, im_q, perms[1])
            loss, keys = loss_12 + loss_21, torch.cat([k1, k2])
        else:
            loss, keys = self._loss(im_q, im_k, perms[0])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self._enqueue(keys)
        return loss.item()
