"""The surrogate's second-order conv2d kernels: the values of stock autograd, bit for bit.

The kernels call the same convolutions that stock autograd calls for the terms it needs, and only
leave out the unused weight gradient, so every comparison here is exact. The test convolutions
are small, so most tests lower the size threshold to route every convolution through the kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from worker.audit import second_order
from worker.audit.attacks import AttackProblem, build_attack, run_attack
from worker.audit.job import prepare_input
from worker.audit.metrics import default_k
from worker.audit.saliency import SaliencyConfig, saliency_map
from worker.audit.second_order import Conv2dConstantWeight
from worker.audit.surrogate import SmoothSurrogate, SoftplusMode

BETA = 10.0

# Keyword arguments of F.conv2d, with the input channels and groups they need.
CONV_CASES = [
    {"stride": 1, "padding": 1},
    {"stride": 2, "padding": 3},  # odd output: the input gradient must recover the input size
    {"stride": 2, "padding": 0, "dilation": 2},
    {"stride": (2, 1), "padding": (1, 0), "groups": 2},
    {"stride": [1], "padding": [2]},
]


@pytest.fixture
def every_conv(monkeypatch):
    """Route convolutions of any size through the kernels."""
    monkeypatch.setattr(second_order, "MIN_MULTIPLY_ACCUMULATES", 0)


def conv_inputs(case: dict, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    groups = case.get("groups", 1)
    weight = torch.randn(6, 4 // groups, 3, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(6, generator=generator, dtype=torch.float64)
    x = torch.randn(2, 4, 9, 8, generator=generator, dtype=torch.float64)
    return x.requires_grad_(True), weight, bias


def smooth_conv(x: torch.Tensor, weight, bias, case: dict, kernels: bool) -> torch.Tensor:
    with SoftplusMode(BETA, second_order_kernels=kernels):
        return F.relu(F.conv2d(x, weight, bias, **case))


def map_and_loss_gradient(output: torch.Tensor, x: torch.Tensor) -> tuple:
    """Return (input gradient of a weighted output sum, gradient of a loss on its absolute)."""
    direction = torch.linspace(-1.0, 1.0, output.numel(), dtype=output.dtype).view_as(output)
    (gradient,) = torch.autograd.grad(output, x, direction, create_graph=True)
    (loss_gradient,) = torch.autograd.grad(gradient.abs().pow(3).sum(), x)
    return gradient, loss_gradient


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv_gradgradcheck(every_conv, case):
    x, weight, bias = conv_inputs(case)

    assert torch.autograd.gradgradcheck(lambda x: smooth_conv(x, weight, bias, case, True), (x,))


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv_matches_stock_autograd(every_conv, case):
    x, weight, bias = conv_inputs(case)

    fast = smooth_conv(x, weight, bias, case, kernels=True)
    stock = smooth_conv(x, weight, bias, case, kernels=False)
    fast_gradient, fast_loss_gradient = map_and_loss_gradient(fast, x)
    stock_gradient, stock_loss_gradient = map_and_loss_gradient(stock, x)

    assert type(fast.grad_fn.next_functions[0][0]).__name__ == "Conv2dConstantWeightBackward"
    assert torch.equal(fast, stock)
    assert torch.equal(fast_gradient, stock_gradient)
    assert torch.equal(fast_loss_gradient, stock_loss_gradient)
    assert fast_loss_gradient.abs().max() > 0


def test_conv_with_trainable_weight_stays_stock(every_conv):
    x, weight, bias = conv_inputs(CONV_CASES[0])
    weight.requires_grad_(True)

    output = smooth_conv(x, weight, bias, CONV_CASES[0], kernels=True)
    (weight_gradient,) = torch.autograd.grad(output.sum(), weight)

    assert type(output.grad_fn.next_functions[0][0]).__name__ == "ConvolutionBackward0"
    assert weight_gradient.abs().max() > 0


def test_conv_with_padding_string_stays_stock(every_conv):
    x, weight, bias = conv_inputs(CONV_CASES[0])

    with SoftplusMode(BETA):
        output = F.conv2d(x, weight, bias, padding="same")

    assert type(output.grad_fn).__name__ == "ConvolutionBackward0"
    torch.testing.assert_close(output, F.conv2d(x, weight, bias, padding="same"))


def test_kernels_off_leaves_stock_conv(every_conv):
    x, weight, bias = conv_inputs(CONV_CASES[0])

    output = smooth_conv(x, weight, bias, CONV_CASES[0], kernels=False)

    assert type(output.grad_fn.next_functions[0][0]).__name__ == "ConvolutionBackward0"


def test_conv_size_threshold():
    """At the default threshold a small convolution stays stock and a large one does not."""
    generator = torch.Generator().manual_seed(0)
    small = torch.randn(1, 4, 8, 8, generator=generator, requires_grad=True)
    large = torch.randn(1, 16, 64, 64, generator=generator, requires_grad=True)
    small_weight = torch.randn(6, 4, 3, 3, generator=generator)
    large_weight = torch.randn(64, 16, 3, 3, generator=generator)

    with SoftplusMode(BETA):
        small_output = F.conv2d(small, small_weight, padding=1)
        large_output = F.conv2d(large, large_weight, padding=1)

    assert 64 * 16 * 9 * 64 * 64 >= second_order.MIN_MULTIPLY_ACCUMULATES > 6 * 4 * 9 * 8 * 8
    assert type(small_output.grad_fn).__name__ == "ConvolutionBackward0"
    assert type(large_output.grad_fn).__name__ == "Conv2dConstantWeightBackward"


def test_multiply_accumulates_counts_output_positions():
    x = torch.zeros(2, 4, 9, 8)
    weight = torch.zeros(6, 2, 3, 3)
    settings = ((2, 1), (1, 0), (2, 1), 2)

    output = F.conv2d(x, weight, None, (2, 1), (1, 0), (2, 1), 2)

    # Each output element takes C_in / groups * kH * kW = 2 * 3 * 3 multiply-accumulates.
    expected = output.numel() * 2 * 3 * 3
    assert second_order.multiply_accumulates(x, weight, settings) == expected


def random_batch_norm(channels: int, seed: int) -> nn.BatchNorm2d:
    """An eval-mode batch norm with non-trivial statistics and frozen affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    norm = nn.BatchNorm2d(channels).double().eval()
    norm.running_mean.copy_(torch.randn(channels, generator=generator, dtype=torch.float64))
    norm.running_var.copy_(torch.rand(channels, generator=generator, dtype=torch.float64) + 0.5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels, generator=generator, dtype=torch.float64))
        norm.bias.copy_(torch.randn(channels, generator=generator, dtype=torch.float64))
    norm.requires_grad_(False)
    return norm


class SmallResidualNet(nn.Module):
    """Strided and grouped convolutions, batch norm, in-place ReLU, a residual sum, max pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.norm1 = random_batch_norm(8, seed=3)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.norm2 = random_batch_norm(8, seed=4)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.norm1(self.stem(x)))
        out = self.norm2(self.conv(x))
        out += x
        return self.head(self.pool(self.relu(out)).flatten(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_surrogate_attack_gradient_matches_stock(every_conv, dtype):
    torch.manual_seed(0)
    model = SmallResidualNet().to(dtype).eval().requires_grad_(False)
    x = torch.rand(2, 3, 16, 16, dtype=dtype)
    target = torch.tensor([1, 3])

    results = {}
    for kernels in (True, False):
        surrogate = SmoothSurrogate(model, BETA, second_order_kernels=kernels)
        leaf = x.clone().requires_grad_(True)
        logits = surrogate(leaf)
        selected = logits.gather(1, target.view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(selected, leaf, create_graph=True)
        saliency = gradient.abs().sum(1)
        loss = (saliency[:, :4, :4].sum() / saliency.sum()).sum()
        (loss_gradient,) = torch.autograd.grad(loss, leaf)
        results[kernels] = (logits, saliency, loss_gradient, dict(surrogate.replaced_calls))

    fast, stock = results[True], results[False]
    assert torch.equal(fast[0], stock[0])
    assert torch.equal(fast[1], stock[1])
    assert torch.equal(fast[2], stock[2])
    assert fast[2].abs().max() > 0
    # Convolutions are rerouted, not replaced: only the ReLU calls are counted.
    assert fast[3] == stock[3] == {"relu": 2}


def test_builtin_attack_identical_with_kernels(every_conv, digits_model, digit_samples):
    model = digits_model.model.requires_grad_(False)
    items = [prepare_input(path, digits_model, 10**6) for path in digit_samples[::5]]
    inputs = torch.from_numpy(np.stack([item.pixels for item in items]))
    with torch.no_grad():
        target = model(inputs).argmax(1)
    config = SaliencyConfig()
    original_maps = saliency_map(model, inputs, target, config).detach()

    outcomes = {}
    for kernels in (True, False):
        problem = AttackProblem(
            model=model,
            surrogate=SmoothSurrogate(model, BETA, second_order_kernels=kernels),
            config=config,
            inputs=inputs,
            target=target,
            original_maps=original_maps,
            k=default_k(32, 32),
            epsilon=8 / 255,
            step_size=0.5 / 255,
            steps=5,
            generators=[torch.Generator().manual_seed(i) for i in range(len(items))],
        )
        outcomes[kernels] = run_attack(build_attack("topk", problem))

    fast, stock = outcomes[True], outcomes[False]
    assert torch.equal(fast.perturbed, stock.perturbed)
    assert torch.equal(fast.score, stock.score)
    assert torch.equal(fast.best_step, stock.best_step)
    assert torch.equal(fast.zero_gradient_steps, stock.zero_gradient_steps)
    assert (fast.perturbed != inputs).any()


def test_constant_weight_function_drops_weight_gradient():
    """The Function returns no gradient for the weight, so callers must not pass a trainable one."""
    x, weight, bias = conv_inputs(CONV_CASES[0])
    weight.requires_grad_(True)

    output = Conv2dConstantWeight.apply(x, weight, bias, ((1, 1), (1, 1), (1, 1), 1))
    (weight_gradient,) = torch.autograd.grad(output.sum(), weight, allow_unused=True)

    assert weight_gradient is None
