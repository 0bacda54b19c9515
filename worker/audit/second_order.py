"""Convolution with a cheaper double backward, for the surrogate.

An attack step differentiates the saliency map, itself a gradient, so autograd runs the backward
of every layer's backward. For ``conv2d`` PyTorch does this in ``_convolution_double_backward``,
which also computes a weight-gradient convolution whether or not the weight requires grad, and
fills a zero input gradient. With frozen weights that is one wasted convolution per layer and
step (seen with torch.profiler in torch 2.14.1: three convolutions per layer in the double
backward where two are needed).

Here a convolution whose weight and bias are constants is an ``autograd.Function``. Its backward
returns only the input gradient, computed by ``aten.convolution_backward`` with the input mask
alone, the call that stock autograd makes. That backward is itself a Function whose backward is
the forward convolution again, the convolution that stock autograd uses for that term. So each
further derivative costs one convolution per layer, and the values are those of stock autograd:
only the unused weight gradient and the zero tensors are left out.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# (stride, padding, dilation, groups) of a convolution, each spatial entry a pair of ints.
ConvSettings = tuple[tuple[int, int], tuple[int, int], tuple[int, int], int]

CONV2D_PARAMETERS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
CONV2D_DEFAULTS = (None, None, None, 1, 0, 1, 1)

# Convolutions with fewer multiply-accumulates run the stock call, because below about this size
# the Python cost of the two Functions exceeds the weight-gradient convolution they save. On a
# 2-core AMD EPYC with 2 torch threads, the Functions made the surrogate's map and loss gradient
# 3-15% slower for builtin:digits_cnn (at most 9.4e6 per convolution at batch 8). They made it
# about 10% faster for ResNet-18 at 224x224 (1.2e8 per 3x3 convolution at batch 1).
# NOTE: the threshold is an estimate between those two sizes on that one CPU.
MIN_MULTIPLY_ACCUMULATES = 2**24


def _bind(args: tuple, kwargs: dict, names: tuple[str, ...], defaults: tuple) -> list[Any]:
    """Return the values of ``names`` from positional and keyword arguments, else the defaults."""
    return [
        args[i] if i < len(args) else kwargs.get(name, default)
        for i, (name, default) in enumerate(zip(names, defaults, strict=True))
    ]


def _pair(value: int | tuple[int, ...] | list[int]) -> tuple[int, int] | None:
    """Return ``value`` as a pair of ints, or None for anything else (a padding string)."""
    if isinstance(value, int):
        return (value, value)
    if not isinstance(value, tuple | list) or not all(isinstance(v, int) for v in value):
        return None
    if len(value) == 1:
        return (value[0], value[0])
    if len(value) == 2:
        return (value[0], value[1])
    return None


def _conv2d(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, settings: ConvSettings
) -> torch.Tensor:
    stride, padding, dilation, groups = settings
    return F.conv2d(inputs, weight, bias, stride, padding, dilation, groups)


def _conv2d_input_gradient(
    grad_output: torch.Tensor, inputs: torch.Tensor, weight: torch.Tensor, settings: ConvSettings
) -> torch.Tensor:
    """Input gradient of conv2d, computed without the weight and bias gradients."""
    # NOTE: compared with stock autograd on the CPU only; not yet run on CUDA.
    stride, padding, dilation, groups = settings
    grad_input, _, _ = torch.ops.aten.convolution_backward(
        grad_output,
        inputs,
        weight,
        None,
        list(stride),
        list(padding),
        list(dilation),
        False,
        [0, 0],
        groups,
        [True, False, False],
    )
    return grad_input


class Conv2dConstantWeight(torch.autograd.Function):
    """conv2d differentiable in its input only; the weight and bias must not require grad."""

    @staticmethod
    def forward(
        inputs: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        settings: ConvSettings,
    ) -> torch.Tensor:
        return _conv2d(inputs, weight, bias, settings)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        x, weight, _, settings = inputs
        # The input gradient reads only the input's shape and layout, but
        # aten.convolution_backward takes the tensor; the autograd graph keeps it anyway.
        ctx.save_for_backward(x, weight)
        ctx.settings = settings

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[0] and torch.is_grad_enabled():
            # create_graph=True: record a node, so the input gradient can be differentiated.
            grad_input = Conv2dInputGradient.apply(grad_output, x.detach(), weight, ctx.settings)
        elif ctx.needs_input_grad[0]:
            grad_input = _conv2d_input_gradient(grad_output, x, weight, ctx.settings)
        return grad_input, None, None, None


class Conv2dInputGradient(torch.autograd.Function):
    """Input gradient of conv2d with a constant weight, differentiable in ``grad_output``.

    The input gradient is linear in ``grad_output`` and does not depend on the input's values,
    so its own backward is the forward convolution (without bias) of the incoming gradient.
    """

    @staticmethod
    def forward(
        grad_output: torch.Tensor,
        inputs: torch.Tensor,
        weight: torch.Tensor,
        settings: ConvSettings,
    ) -> torch.Tensor:
        return _conv2d_input_gradient(grad_output, inputs, weight, settings)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        _, _, weight, settings = inputs
        ctx.save_for_backward(weight)
        ctx.settings = settings

    @staticmethod
    def backward(ctx: Any, grad_grad_input: torch.Tensor) -> tuple:
        (weight,) = ctx.saved_tensors
        grad_grad_output = None
        if ctx.needs_input_grad[0] and torch.is_grad_enabled():
            grad_grad_output = Conv2dConstantWeight.apply(
                grad_grad_input, weight, None, ctx.settings
            )
        elif ctx.needs_input_grad[0]:
            # No graph is being built, so the plain call saves a Function's Python overhead.
            grad_grad_output = _conv2d(grad_grad_input, weight, None, ctx.settings)
        return grad_grad_output, None, None, None


def multiply_accumulates(inputs: torch.Tensor, weight: torch.Tensor, settings: ConvSettings) -> int:
    """Return the multiply-accumulates of conv2d on (N, C, H, W) ``inputs``, bias not counted."""
    stride, padding, dilation, _ = settings
    output_size = [
        (inputs.shape[2 + i] + 2 * padding[i] - dilation[i] * (weight.shape[2 + i] - 1) - 1)
        // stride[i]
        + 1
        for i in range(2)
    ]
    # weight is (C_out, C_in / groups, kH, kW), so its numel already accounts for groups.
    return inputs.shape[0] * weight.numel() * max(0, output_size[0]) * max(0, output_size[1])


def conv2d_constant_weight(args: tuple, kwargs: dict) -> torch.Tensor:
    """Run a ``torch.conv2d`` call through ``Conv2dConstantWeight`` where that is equivalent.

    The stock call runs instead in these cases:

    - the weight or bias requires grad, because the Function would drop their gradients;
    - the padding is a string such as "same", or the input is not (N, C, H, W);
    - the input and weight dtypes differ;
    - the convolution has fewer than ``MIN_MULTIPLY_ACCUMULATES``.
    """
    x, weight, bias, stride, padding, dilation, groups = _bind(
        args, kwargs, CONV2D_PARAMETERS, CONV2D_DEFAULTS
    )
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    stock = (
        not isinstance(x, torch.Tensor)
        or not isinstance(weight, torch.Tensor)
        or weight.requires_grad
        or (bias is not None and bias.requires_grad)
        or x.dtype != weight.dtype
        or x.dim() != 4
        or stride is None
        or padding is None
        or dilation is None
    )
    if stock:
        return torch.conv2d(*args, **kwargs)
    settings = (stride, padding, dilation, int(groups))
    if multiply_accumulates(x, weight, settings) < MIN_MULTIPLY_ACCUMULATES:
        return torch.conv2d(*args, **kwargs)
    return Conv2dConstantWeight.apply(x, weight, bias, settings)


# torch.conv2d is the same builtin as F.conv2d, which nn.Conv2d calls.
SECOND_ORDER_KERNELS = {torch.conv2d: conv2d_constant_weight}
