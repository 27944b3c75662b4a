"""The same MoCo step in PyTorch, for the ratio ours/PyTorch (the official builder's logic, one process).

Only imported when torch is installed; nothing in moco_ref depends on it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(nn.Module):
    """torchvision's ResNet with the CIFAR stem (3×3 conv, no max-pool), BasicBlocks."""

    def __init__(self, blocks, width, dim):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, c_in = [], width
        for stage, (count, stride) in enumerate(zip(blocks, (1, 2, 2, 2))):
            c_out = width * 2 ** stage
            for b in range(count):
                layers.append(_Block(c_in, c_out, stride if b == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(8 * width, dim)

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TorchMoCoStep:
    """q forward+backward, momentum update, shuffled key forward, InfoNCE over the queue, SGD, enqueue."""

    def __init__(self, blocks, width, dim=128, K=4096, m=0.99, T=0.1, lr=0.06, device="cpu"):
        self.device = torch.device(device)
        self.encoder_q = CifarResNet(blocks, width, dim).to(self.device)
        self.encoder_k = CifarResNet(blocks, width, dim).to(self.device)
        self.encoder_k.load_state_dict(self.encoder_q.state_dict())
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        self.queue = F.normalize(torch.randn(dim, K, device=self.device), dim=0)
        self.ptr, self.m, self.T = 0, m, T
        self.optimizer = torch.optim.SGD(self.encoder_q.parameters(), lr, momentum=0.9, weight_decay=5e-4)

    def step(self, im_q, im_k):
        q = F.normalize(self.encoder_q(im_q), dim=1)
        with torch.no_grad():
            for p_q, p_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
                p_k.mul_(self.m).add_(p_q, alpha=1.0 - self.m)
            perm = torch.randperm(im_k.shape[0], device=self.device)
            k = F.normalize(self.encoder_k(im_k[perm]), dim=1)[torch.argsort(perm)]
        l_pos = (q * k).sum(1, keepdim=True)
        l_neg = q @ self.queue
        logits = torch.cat([l_pos, l_neg], 1) / self.T
        loss = F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            B, K = k.shape[0], self.queue.shape[1]
            idx = (self.ptr + torch.arange(B, device=self.device)) % K
            self.queue[:, idx] = k.T
            self.ptr = (self.ptr + B) % K
        return loss
