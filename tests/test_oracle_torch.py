"""PyTorch as an independent oracle for every layer, the encoder and SGD (float64, ≤ 1e-9 relative).

Skipped where torch is not installed; CI installs the CPU build.
"""

import numpy as np
import pytest
from helpers import assert_close

from moco_ref.layers import basic, batchnorm, conv
from moco_ref.models import build_encoder
from moco_ref.optim import SGD

torch = pytest.importorskip("torch")
F = torch.nn.functional
from moco_ref.pytorch_moco import SplitBatchNorm, torch_encoder_like  # noqa: E402 (after the skip without torch)

RTOL = 1e-9


def nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


def nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


# 32-wide images: with the ``fast`` extra a 3×3 stride-1 convolution runs the direct kernel.
@pytest.mark.parametrize(
    "k,stride,padding,width", [(3, 1, 1, 9), (3, 2, 1, 9), (1, 2, 0, 9), (5, 1, 2, 9), (3, 2, 0, 9), (3, 1, 1, 32)]
)
def test_conv2d_matches_torch(k, stride, padding, width):
    rng = np.random.default_rng(k + stride)
    x = rng.standard_normal((3, 9, width, 4))
    w = rng.standard_normal((5, 4, k, k))
    y, cache = conv.conv2d_forward(x, w, stride, padding)
    g = rng.standard_normal(y.shape)
    dx, dw = conv.conv2d_backward(g, cache)

    xt, wt = nchw(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    yt = F.conv2d(xt, wt, stride=stride, padding=padding)
    yt.backward(nchw(g))
    assert_close(y, nhwc(yt), RTOL, "conv2d output")
    assert_close(dx, nhwc(xt.grad), RTOL, "conv2d dx")
    assert_close(dw, wt.grad.numpy(), RTOL, "conv2d dw")


@pytest.mark.parametrize("splits", [1, 2, 4])
def test_batchnorm_training_matches_torch(splits):
    rng = np.random.default_rng(splits)
    x = rng.standard_normal((8, 3, 3, 5)) * 2 + 1
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5)
    mean0, var0 = rng.standard_normal(5), rng.uniform(0.5, 2, 5)
    y, (mean1, var1), cache = batchnorm.batchnorm_forward(x, gamma, beta, mean0, var0, True, splits)
    g = rng.standard_normal(y.shape)
    dx, dgamma, dbeta, _ = batchnorm.batchnorm_backward(g, cache)

    bn = SplitBatchNorm(5, splits).double()
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
        bn.running_mean.copy_(torch.from_numpy(mean0))
        bn.running_var.copy_(torch.from_numpy(var0))
    xt = nchw(x).requires_grad_()
    yt = bn.train()(xt)
    yt.backward(nchw(g))
    assert_close(y, nhwc(yt), RTOL, "bn output")
    assert_close(mean1, bn.running_mean.numpy(), RTOL, "running_mean")
    assert_close(var1, bn.running_var.numpy(), RTOL, "running_var (unbiased)")
    assert_close(dx, nhwc(xt.grad), RTOL, "bn dx")
    assert_close(dgamma, bn.weight.grad.numpy(), RTOL, "bn dgamma")
    assert_close(dbeta, bn.bias.grad.numpy(), RTOL, "bn dbeta")


@pytest.mark.parametrize("training,splits", [(True, 1), (True, 2), (False, 1)])
def test_batchnorm_with_residual_and_relu_matches_torch(training, splits):
    """A BasicBlock's end, relu(bn(x) + residual), as one BatchNorm call with the add and the ReLU folded in."""
    rng = np.random.default_rng(11 + splits)
    x, residual = rng.standard_normal((8, 3, 3, 5)) * 2 + 1, rng.standard_normal((8, 3, 3, 5))
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5)
    mean0, var0 = rng.standard_normal(5), rng.uniform(0.5, 2, 5)
    y, _, cache = batchnorm.batchnorm_forward(x, gamma, beta, mean0, var0, training, splits, residual, True)
    g = rng.standard_normal(y.shape)
    dx, dgamma, dbeta, dresidual = batchnorm.batchnorm_backward(g, cache)

    bn = SplitBatchNorm(5, splits).double()
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
        bn.running_mean.copy_(torch.from_numpy(mean0))
        bn.running_var.copy_(torch.from_numpy(var0))
    xt, rt = nchw(x).requires_grad_(), nchw(residual).requires_grad_()
    yt = F.relu(bn.train(training)(xt) + rt)
    yt.backward(nchw(g))
    assert_close(y, nhwc(yt), RTOL, "relu(bn + residual) output")
    assert_close(dx, nhwc(xt.grad), RTOL, "relu(bn + residual) dx")
    assert_close(dresidual, nhwc(rt.grad), RTOL, "relu(bn + residual) dresidual")
    assert_close(dgamma, bn.weight.grad.numpy(), RTOL, "relu(bn + residual) dgamma")
    assert_close(dbeta, bn.bias.grad.numpy(), RTOL, "relu(bn + residual) dbeta")


def test_batchnorm_eval_matches_torch():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3, 3, 5))
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5)
    mean, var = rng.standard_normal(5), rng.uniform(0.5, 2, 5)
    y, running, cache = batchnorm.batchnorm_forward(x, gamma, beta, mean, var, False)
    assert running is None
    g = rng.standard_normal(y.shape)
    dx, dgamma, dbeta, _ = batchnorm.batchnorm_backward(g, cache)
    xt, gt, bt = (
        nchw(x).requires_grad_(),
        torch.from_numpy(gamma).requires_grad_(),
        torch.from_numpy(beta).requires_grad_(),
    )
    yt = F.batch_norm(xt, torch.from_numpy(mean), torch.from_numpy(var), gt, bt, False, 0.1, 1e-5)
    yt.backward(nchw(g))
    assert_close(y, nhwc(yt), RTOL, "eval bn output")
    assert_close(dx, nhwc(xt.grad), RTOL, "eval bn dx")
    assert_close(dgamma, gt.grad.numpy(), RTOL, "eval bn dgamma")
    assert_close(dbeta, bt.grad.numpy(), RTOL, "eval bn dbeta")


def test_linear_and_mlp_head_match_torch():
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((6, 8)), rng.standard_normal((6, 4))
    w0, b0 = rng.standard_normal((8, 8)), rng.standard_normal(8)
    w2, b2 = rng.standard_normal((4, 8)), rng.standard_normal(4)
    h0, c0 = basic.linear_forward(x, w0, b0)
    h = basic.relu_forward(h0)
    y, c2 = basic.linear_forward(h, w2, b2)
    dh, dw2, db2 = basic.linear_backward(g, c2)
    dx, dw0, db0 = basic.linear_backward(basic.relu_backward(dh, h), c0)

    tensors = [torch.from_numpy(a).requires_grad_() for a in (x, w0, b0, w2, b2)]
    xt, w0t, b0t, w2t, b2t = tensors
    yt = F.linear(F.relu(F.linear(xt, w0t, b0t)), w2t, b2t)
    yt.backward(torch.from_numpy(g))
    assert_close(y, yt.detach().numpy(), RTOL, "mlp output")
    for name, ours, t in zip(("dx", "dw0", "db0", "dw2", "db2"), (dx, dw0, db0, dw2, db2), tensors):
        assert_close(ours, t.grad.numpy(), RTOL, f"mlp {name}")


@pytest.mark.parametrize("arch,mlp,splits", [("resnet10", False, 1), ("resnet10", True, 2), ("resnet18", True, 1)])
def test_encoder_matches_torch(arch, mlp, splits):
    """Forward output, every parameter gradient and every BN running statistic, float64."""
    encoder = build_encoder(arch, dim=6, width=4, mlp=mlp, bn_splits=splits, seed=5, dtype="float64")
    net = torch_encoder_like(encoder).train()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 3, 12, 12))
    g = rng.standard_normal((8, 6))

    out, cache, encoder.buffers = encoder.forward(x, training=True)
    grads = encoder.backward(g, cache)
    out_t = net(torch.from_numpy(x))
    out_t.backward(torch.from_numpy(g))

    assert_close(out, out_t.detach().numpy(), RTOL, "encoder output")
    torch_grads = {n: p.grad.numpy() for n, p in net.named_parameters()}
    assert list(grads) == list(torch_grads), "gradient names and order follow named_parameters()"
    for name, grad in grads.items():
        assert_close(grad, torch_grads[name], RTOL, f"gradient of {name}")
    torch_state = net.state_dict()
    assert list(encoder.state_dict()) == list(torch_state), "state_dict names and order"
    for name, value in encoder.state_dict().items():
        assert_close(value, torch_state[name].numpy(), RTOL, f"state {name} after a training forward")

    eval_out = encoder.forward(x, training=False).out
    assert_close(eval_out, net.eval()(torch.from_numpy(x)).detach().numpy(), RTOL, "eval-mode output")


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_torch(nesterov):
    rng = np.random.default_rng(11)
    params = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    torch_params = [torch.from_numpy(p.copy()).requires_grad_() for p in params.values()]
    ours = SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    theirs = torch.optim.SGD(torch_params, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    for step in range(4):
        grads = {n: rng.standard_normal(p.shape) for n, p in params.items()}
        lr = 0.1 if step < 2 else 0.03  # the learning rate changes between epochs
        for group in theirs.param_groups:
            group["lr"] = lr
        ours.step_(grads, lr=lr if step >= 2 else None)
        for t, g in zip(torch_params, grads.values()):
            t.grad = torch.from_numpy(g)
        theirs.step()
    for (name, p), t in zip(params.items(), torch_params):
        assert_close(p, t.detach().numpy(), RTOL, f"parameter {name} after 4 SGD steps")
