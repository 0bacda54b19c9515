"""Saliency maps against Captum 0.8+ on builtin:digits_cnn, and their second derivatives.

Captum is the numerical reference for every method. Its maps are detached from the input, so the
attacks use our implementations. These tests check that the two agree on the same model and
inputs, and that ours can be differentiated twice where it matters.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

from worker.audit.images import load_image, to_model_input
from worker.audit.saliency import SaliencyConfig, attributions, saliency_map
from worker.audit.saliency.smoothgrad import smoothgrad_noise
from worker.audit.surrogate import SmoothSurrogate

# Float32 gradients of the same graph agree to rounding; the rest is summation order.
ATOL = 1e-5


@pytest.fixture
def model(digits_model):
    """The wrapped digits model with frozen weights, as the audit runs it."""
    network = digits_model.model.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


@pytest.fixture
def batch(digit_samples, model) -> tuple[torch.Tensor, torch.Tensor]:
    """Four held-out digits of different classes (N=4, 1, 32, 32) and their predicted labels."""
    chosen = digit_samples[::5]
    pixels = [to_model_input(load_image(path), 1, (32, 32))[0] for path in chosen]
    inputs = torch.from_numpy(np.stack(pixels))
    with torch.no_grad():
        target = model(inputs).argmax(1)
    return inputs, target


def test_gradient_matches_captum_saliency(model, batch):
    inputs, target = batch
    ours = attributions(model, inputs, target, SaliencyConfig("gradient"))
    reference = Saliency(model).attribute(
        inputs.clone().requires_grad_(True), target=target, abs=False
    )

    assert ours.shape == inputs.shape
    assert reference.abs().max() > 0
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


def test_gradient_x_input_matches_captum(model, batch):
    inputs, target = batch
    ours = attributions(model, inputs, target, SaliencyConfig("gradient_x_input"))
    reference = InputXGradient(model).attribute(inputs.clone().requires_grad_(True), target=target)

    assert reference.abs().max() > 0
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


@pytest.mark.parametrize("baseline_kind", ["black", "white", "mean"])
def test_integrated_gradients_matches_captum(model, batch, baseline_kind):
    inputs, target = batch
    config = SaliencyConfig("integrated_gradients", ig_steps=50, ig_baseline=baseline_kind)
    ours = attributions(model, inputs, target, config, mean=model.mean)

    baselines = {
        "black": torch.zeros_like(inputs),
        "white": torch.ones_like(inputs),
        "mean": model.mean.expand_as(inputs).clone(),
    }[baseline_kind]
    reference = IntegratedGradients(model).attribute(
        inputs.clone(), baselines=baselines, target=target, n_steps=50, method="gausslegendre"
    )

    assert reference.abs().max() > 0
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


def test_smoothgrad_equals_mean_of_captum_on_same_noise(model, batch):
    inputs, target = batch
    samples = 8
    noise = smoothgrad_noise(tuple(inputs.shape), samples, 0.15, torch.Generator().manual_seed(3))
    config = SaliencyConfig("smoothgrad", smoothgrad_samples=samples, smoothgrad_noise=0.15)
    ours = attributions(model, inputs, target, config, noise=noise)

    saliency = Saliency(model)
    per_copy = [
        saliency.attribute((inputs + noise[s]).requires_grad_(True), target=target, abs=False)
        for s in range(samples)
    ]
    reference = torch.stack(per_copy).mean(0)

    assert reference.abs().max() > 0
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


def test_smoothgrad_agrees_with_captum_noise_tunnel(model, batch):
    """Independent noise on each side, so the maps agree only statistically.

    With 256 samples each, the relative L2 difference of two SmoothGrad estimates is about 0.07
    on this model (measured on these two images). The plain gradient, the limit of zero noise,
    is much further away.
    """
    inputs, target = batch[0][:2], batch[1][:2]
    samples, stdev = 256, 0.15
    noise = smoothgrad_noise(tuple(inputs.shape), samples, stdev, torch.Generator().manual_seed(0))
    config = SaliencyConfig("smoothgrad", smoothgrad_samples=samples, smoothgrad_noise=stdev)
    ours = attributions(model, inputs, target, config, noise=noise)

    torch.manual_seed(1)  # NoiseTunnel draws from the global generator
    reference = NoiseTunnel(Saliency(model)).attribute(
        inputs.clone(),
        nt_type="smoothgrad",
        nt_samples=samples,
        nt_samples_batch_size=64,
        stdevs=stdev,
        target=target,
        abs=False,
    )
    plain = attributions(model, inputs, target, SaliencyConfig("gradient"))

    for i in range(inputs.shape[0]):
        error = float((ours[i] - reference[i]).norm() / reference[i].norm())
        plain_error = float((plain[i] - reference[i]).norm() / reference[i].norm())
        correlation = float(np.corrcoef(ours[i].flatten(), reference[i].flatten())[0, 1])
        assert error < 0.15, f"image {i}: relative L2 difference {error:.3f}"
        assert correlation > 0.98, f"image {i}: correlation {correlation:.4f}"
        assert plain_error > 2 * error, f"image {i}: plain gradient is as close ({plain_error})"


def _second_order_gradient(network, inputs, target, config, noise) -> torch.Tensor | None:
    """Gradient of a loss on the map (the top half's total) with respect to the input."""
    leaf = inputs.clone().requires_grad_(True)
    maps = saliency_map(network, leaf, target, config, create_graph=True, noise=noise)
    loss = maps[:, :16].sum()
    (gradient,) = torch.autograd.grad(loss, leaf, allow_unused=True)
    return gradient


METHOD_CONFIGS = {
    "gradient": SaliencyConfig("gradient"),
    "gradient_x_input": SaliencyConfig("gradient_x_input"),
    "integrated_gradients": SaliencyConfig("integrated_gradients", ig_steps=8),
    "smoothgrad": SaliencyConfig("smoothgrad", smoothgrad_samples=4),
}


@pytest.mark.parametrize("method", list(METHOD_CONFIGS))
def test_map_on_surrogate_differentiable_twice(model, batch, method):
    inputs, target = batch
    noise = smoothgrad_noise(tuple(inputs.shape), 4, 0.15, torch.Generator().manual_seed(0))
    surrogate = SmoothSurrogate(model, beta=10.0)

    gradient = _second_order_gradient(surrogate, inputs, target, METHOD_CONFIGS[method], noise)

    assert gradient is not None
    assert torch.isfinite(gradient).all()
    # Every image must get a usable direction, not just the batch as a whole.
    assert (gradient.flatten(1).abs().amax(1) > 0).all()


@pytest.mark.parametrize("method", ["gradient", "smoothgrad"])
def test_map_on_relu_model_has_zero_second_order(model, batch, method):
    """The trap the surrogate exists for: a ReLU network's input gradient is piecewise constant.

    Gradient x input and integrated gradients keep a non-zero term from the input factor, so
    only the methods made of input gradients alone are checked.
    """
    inputs, target = batch
    noise = smoothgrad_noise(tuple(inputs.shape), 4, 0.15, torch.Generator().manual_seed(0))

    gradient = _second_order_gradient(model, inputs, target, METHOD_CONFIGS[method], noise)

    assert gradient is None or gradient.abs().max() == 0
