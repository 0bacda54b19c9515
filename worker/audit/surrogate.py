"""A smooth surrogate of a classifier for attack gradients: ReLU-like calls become softplus.

A ReLU network is piecewise linear, so the gradient of its saliency map with respect to the
input is zero almost everywhere and an attack on the map would not move. The surrogate runs the
same module, with the same weights, inside a ``TorchFunctionMode`` that replaces every
piecewise-linear activation call with a smooth one. Intercepting calls (rather than swapping
``nn.ReLU`` modules) also catches ``F.relu``, ``torch.relu`` and ``Tensor.relu`` in ``forward``
code, and needs no copy of the model.

Replaced (beta is the softplus sharpness; softplus_b(x) = log(1 + exp(b x)) / b):

- relu -> softplus_b(x)
- leaky_relu(slope) -> slope x + (1 - slope) softplus_b(x)
- relu6, hardtanh(lo, hi) -> lo + softplus_b(x - lo) - softplus_b(x - hi)
- hardsigmoid -> the smooth hardtanh of x/6 + 1/2 on [0, 1]
- hardswish -> x times the smooth hardsigmoid

By default the mode also routes ``conv2d`` calls through ``worker.audit.second_order``: the
same values with a cheaper double backward. Those calls are not counted as replacements.

TorchScript modules do not dispatch through Python, so nothing inside them is replaced; the
audit detects the resulting zero gradients and reports them instead of a robust map.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from worker.audit.second_order import SECOND_ORDER_KERNELS


def smooth_clamp(x: torch.Tensor, low: float, high: float, beta: float) -> torch.Tensor:
    """Softplus approximation of clamp(x, low, high)."""
    return low + F.softplus(x - low, beta=beta) - F.softplus(x - high, beta=beta)


def _first_argument(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["input"]


def _argument(args: tuple, kwargs: dict, position: int, name: str, default: float) -> float:
    if len(args) > position:
        return float(args[position])
    return float(kwargs.get(name, default))


class SoftplusMode(TorchFunctionMode):
    """Replaces piecewise-linear activation calls with smooth ones while the mode is active.

    Args:
        beta: softplus sharpness; larger is closer to ReLU. Default 10.
        counts: Counter that records how many activation calls of each kind were replaced.
        second_order_kernels: also route conv2d calls through the kernels of
            ``worker.audit.second_order``. Default True; False leaves them to stock autograd, as
            a plain implementation would.
    """

    def __init__(
        self,
        beta: float = 10.0,
        counts: Counter | None = None,
        second_order_kernels: bool = True,
    ) -> None:
        super().__init__()
        self.beta = beta
        self.counts = counts if counts is not None else Counter()
        self._kernels: dict[Any, Any] = dict(SECOND_ORDER_KERNELS) if second_order_kernels else {}
        relu_like = (
            F.relu,
            F.relu_,
            torch.relu,
            torch.relu_,
            torch.Tensor.relu,
            torch.Tensor.relu_,
        )
        self._handlers: dict[Any, Any] = dict.fromkeys(relu_like, self._relu)
        self._handlers.update(
            {
                F.leaky_relu: self._leaky_relu,
                F.leaky_relu_: self._leaky_relu,
                F.relu6: self._relu6,
                F.hardtanh: self._hardtanh,
                F.hardtanh_: self._hardtanh,
                F.hardsigmoid: self._hardsigmoid,
                F.hardswish: self._hardswish,
            }
        )

    def _relu(self, args: tuple, kwargs: dict) -> torch.Tensor:
        return F.softplus(_first_argument(args, kwargs), beta=self.beta)

    def _leaky_relu(self, args: tuple, kwargs: dict) -> torch.Tensor:
        x = _first_argument(args, kwargs)
        slope = _argument(args, kwargs, 1, "negative_slope", 0.01)
        return slope * x + (1 - slope) * F.softplus(x, beta=self.beta)

    def _relu6(self, args: tuple, kwargs: dict) -> torch.Tensor:
        return smooth_clamp(_first_argument(args, kwargs), 0.0, 6.0, self.beta)

    def _hardtanh(self, args: tuple, kwargs: dict) -> torch.Tensor:
        low = _argument(args, kwargs, 1, "min_val", -1.0)
        high = _argument(args, kwargs, 2, "max_val", 1.0)
        return smooth_clamp(_first_argument(args, kwargs), low, high, self.beta)

    def _hardsigmoid(self, args: tuple, kwargs: dict) -> torch.Tensor:
        x = _first_argument(args, kwargs)
        return smooth_clamp(x / 6 + 0.5, 0.0, 1.0, self.beta)

    def _hardswish(self, args: tuple, kwargs: dict) -> torch.Tensor:
        x = _first_argument(args, kwargs)
        return x * smooth_clamp(x / 6 + 0.5, 0.0, 1.0, self.beta)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = self._handlers.get(func)
        if handler is not None:
            self.counts[getattr(func, "__name__", str(func))] += 1
            # The mode is switched off while this handler runs, so softplus is not intercepted.
            return handler(args, kwargs)
        kernel = self._kernels.get(func)
        if kernel is not None:
            return kernel(args, kwargs)
        return func(*args, **kwargs)


class SmoothSurrogate(nn.Module):
    """The wrapped model evaluated under ``SoftplusMode``: same weights, smooth activations.

    Args:
        model: the classifier, (N, C, H, W) in [0, 1] -> (N, classes).
        beta: softplus sharpness. Default 10.
        second_order_kernels: see ``SoftplusMode``. Default True.

    Attributes:
        replaced_calls: Counter of activation calls replaced so far, by function name.
    """

    def __init__(
        self, model: nn.Module, beta: float = 10.0, second_order_kernels: bool = True
    ) -> None:
        super().__init__()
        self.model = model
        self.beta = beta
        self.second_order_kernels = second_order_kernels
        self.replaced_calls: Counter = Counter()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        with SoftplusMode(self.beta, self.replaced_calls, self.second_order_kernels):
            return self.model(inputs)
