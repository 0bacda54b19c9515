"""The smooth surrogate: which activation calls SoftplusMode replaces, and with what."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from worker.audit.surrogate import SmoothSurrogate, SoftplusMode


def softplus(x: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.log1p(torch.exp(beta * x)) / beta


X = torch.linspace(-8.0, 8.0, 161, dtype=torch.float64)
BETA = 4.0

# name, call under the mode, the smooth function it must become, the original function.
CASES = [
    ("F.relu", lambda x: F.relu(x), lambda x: softplus(x, BETA), torch.relu),
    ("torch.relu", lambda x: torch.relu(x), lambda x: softplus(x, BETA), torch.relu),
    ("Tensor.relu", lambda x: x.relu(), lambda x: softplus(x, BETA), torch.relu),
    ("nn.ReLU", lambda x: nn.ReLU()(x), lambda x: softplus(x, BETA), torch.relu),
    (
        "F.leaky_relu",
        lambda x: F.leaky_relu(x, 0.2),
        lambda x: 0.2 * x + 0.8 * softplus(x, BETA),
        lambda x: F.leaky_relu(x, 0.2),
    ),
    (
        "F.relu6",
        lambda x: F.relu6(x),
        lambda x: softplus(x, BETA) - softplus(x - 6, BETA),
        F.relu6,
    ),
    (
        "F.hardtanh",
        lambda x: F.hardtanh(x, -2.0, 3.0),
        lambda x: -2.0 + softplus(x + 2, BETA) - softplus(x - 3, BETA),
        lambda x: F.hardtanh(x, -2.0, 3.0),
    ),
    (
        "F.hardsigmoid",
        lambda x: F.hardsigmoid(x),
        lambda x: softplus(x / 6 + 0.5, BETA) - softplus(x / 6 - 0.5, BETA),
        F.hardsigmoid,
    ),
    (
        "F.hardswish",
        lambda x: F.hardswish(x),
        lambda x: x * (softplus(x / 6 + 0.5, BETA) - softplus(x / 6 - 0.5, BETA)),
        F.hardswish,
    ),
]


@pytest.mark.parametrize(("name", "call", "smooth", "original"), CASES, ids=[c[0] for c in CASES])
def test_mode_replaces_activation(name, call, smooth, original):
    mode = SoftplusMode(beta=BETA)
    with mode:
        replaced = call(X.clone())
    counts = dict(mode.counts)

    torch.testing.assert_close(replaced, smooth(X), atol=1e-10, rtol=1e-10)
    assert sum(counts.values()) == 1, f"{name}: recorded {counts}"
    # The replacement differs from the original, so the test could tell them apart.
    assert (replaced - original(X)).abs().max() > 1e-3


def test_inplace_relu_is_replaced():
    mode = SoftplusMode(beta=BETA)
    with mode:
        replaced = F.relu(X.clone(), inplace=True)

    torch.testing.assert_close(replaced, softplus(X, BETA), atol=1e-10, rtol=1e-10)
    assert sum(mode.counts.values()) == 1


@pytest.mark.parametrize("beta", [10.0, 100.0, 1000.0])
def test_softplus_relu_error_bounded_by_log2_over_beta(beta):
    with SoftplusMode(beta=beta):
        replaced = F.relu(X.float())
    error = (replaced - torch.relu(X.float())).abs().max()
    # softplus_b(x) - relu(x) is largest at x = 0, where it is log(2) / b.
    assert error <= math.log(2) / beta + 1e-6


def test_relu_unchanged_outside_mode():
    with SoftplusMode(beta=BETA):
        pass
    torch.testing.assert_close(F.relu(X), torch.relu(X))
    assert F.relu(torch.tensor(-1.0)) == 0


def test_surrogate_smooths_builtin_model(digits_model):
    """SmallCNN has two nn.ReLU modules and one F.relu call: all three must be replaced."""
    model = digits_model.model
    surrogate = SmoothSurrogate(model, beta=10.0)
    inputs = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        smooth = surrogate(inputs)
        exact = model(inputs)

    assert surrogate.model is model  # same weights, no copy
    assert dict(surrogate.replaced_calls) == {"relu": 3}
    assert smooth.shape == exact.shape
    assert (smooth - exact).abs().max() > 0


def test_surrogate_close_to_model_at_large_beta(digits_model):
    model = digits_model.model
    inputs = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        smooth = SmoothSurrogate(model, beta=1e4)(inputs)
        exact = model(inputs)

    torch.testing.assert_close(smooth, exact, atol=1e-2, rtol=0)


@pytest.mark.parametrize("method", ["gradient", "integrated_gradients"])
def test_second_order_kernels_match_autograd(digits_model, method):
    """The surrogate's conv2d kernels must give the attack the same gradient as stock autograd."""
    from worker.audit.saliency import SaliencyConfig, saliency_map

    model = digits_model.model
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    inputs = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([3, 7])
    config = SaliencyConfig(method, ig_steps=4)

    gradients = []
    for kernels in (True, False):
        leaf = inputs.clone().requires_grad_(True)
        with SoftplusMode(beta=10.0, second_order_kernels=kernels):
            maps = saliency_map(model, leaf, target, config, create_graph=True)
            (gradient,) = torch.autograd.grad(maps[:, :16].sum(), leaf)
        gradients.append(gradient)

    assert gradients[0].abs().max() > 0
    torch.testing.assert_close(gradients[0], gradients[1], atol=1e-5, rtol=1e-4)
