"""Settings of a saliency method."""

from __future__ import annotations

from dataclasses import dataclass

from worker.audit.params import AuditParams


@dataclass(frozen=True)
class SaliencyConfig:
    """Saliency method and its settings.

    Attributes:
        method: "gradient", "gradient_x_input", "integrated_gradients" or "smoothgrad".
        signed: sum signed attributions over channels instead of absolute values. Default False.
        ig_steps: integrated-gradients path points (Gauss-Legendre). Default 50, Captum's default.
        ig_baseline: "black" (zeros in pixel units), "mean" (the model's normalisation mean, that
            is zero in normalised space, as in Ghorbani et al.) or "white". Default "black".
        smoothgrad_samples: noisy copies averaged. Default 16.
        smoothgrad_noise: standard deviation of the Gaussian noise in pixel units. Default 0.15,
            inside the 10-20% of the input range that Smilkov et al. (2017) recommend.
    """

    method: str = "gradient"
    signed: bool = False
    ig_steps: int = 50
    ig_baseline: str = "black"
    smoothgrad_samples: int = 16
    smoothgrad_noise: float = 0.15

    @classmethod
    def from_params(cls, params: AuditParams) -> SaliencyConfig:
        """Take the saliency fields of the audit parameters."""
        return cls(
            method=params.method,
            signed=params.signed,
            ig_steps=params.ig_steps,
            ig_baseline=params.ig_baseline,
            smoothgrad_samples=params.smoothgrad_samples,
            smoothgrad_noise=params.smoothgrad_noise,
        )
