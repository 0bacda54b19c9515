"""Parameters of an audit, shared by the command line, the HTTP API and the worker.

This module imports no torch, so the API can validate requests and publish the JSON schema.
All lengths are in pixels of the model's input and all intensities in [0, 1] pixel units:
normalisation by mean and std happens inside the wrapped model.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

Method = Literal["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad"]
Attack = Literal["topk", "center_of_mass", "targeted", "manipulate", "random"]
Baseline = Literal["black", "mean", "white"]

METHODS: tuple[str, ...] = Method.__args__
ATTACKS: tuple[str, ...] = Attack.__args__


def parse_fraction(value: object, name: str = "value") -> float:
    """Parse a number given as a float, an int or a string such as "8/255" or "0.03".

    Raises:
        ValueError: naming ``name`` and the value when it is not a number or a fraction.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number such as 0.03 or 8/255, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            pass
    raise ValueError(f"{name} must be a number such as 0.03 or 8/255, got {value!r}")


class AuditParams(BaseModel):
    """Parameters of one audit.

    Defaults follow Ghorbani, Abid & Zou, "Interpretation of Neural Networks is Fragile" (AAAI
    2019), where they fit a CPU: epsilon 8/255 and step size epsilon/16 as in their notebooks, but
    100 steps instead of their 300.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="Model reference: 'builtin:NAME', a registered model's id (service), or "
        "the path of a JSON model spec (command line only).",
        min_length=1,
    )
    method: Method = Field("gradient", description="Saliency method.")
    attack: Attack = Field("topk", description="Attack on the saliency map.")
    epsilon: float = Field(
        8 / 255,
        description="L-infinity budget in [0, 1] pixel units; fractions such as '8/255' accepted.",
    )
    steps: int = Field(100, ge=1, le=10_000, description="Attack iterations.")
    step_size: float | None = Field(
        None, description="Step per iteration in pixel units; default epsilon/16."
    )
    k: int | None = Field(
        None, ge=1, description="Pixels in the top-k set; default 2% of the map's pixels."
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of every random draw.")
    signed: bool = Field(
        False, description="Sum signed attributions over channels instead of absolute values."
    )
    ig_steps: int = Field(50, ge=2, le=1024, description="Integrated-gradients path points.")
    ig_baseline: Baseline = Field(
        "black",
        description="Integrated-gradients baseline: 'black' (all zeros in pixel units, Captum's "
        "default on this wrapped model), 'mean' (the normalisation mean, zero in normalised "
        "space), or 'white'.",
    )
    smoothgrad_samples: int = Field(16, ge=1, le=1024, description="SmoothGrad noise samples.")
    smoothgrad_noise: float = Field(
        0.15, gt=0, le=1, description="SmoothGrad noise standard deviation in pixel units."
    )
    surrogate_beta: float = Field(
        10.0, gt=0, description="Softplus beta of the smooth surrogate used for attack gradients."
    )
    target_box: tuple[int, int, int, int] | None = Field(
        None,
        description="Target region [top, left, bottom, right) in model-input pixels, for the "
        "'targeted' and 'manipulate' attacks.",
    )
    manipulate_gamma: float = Field(
        1.0,
        ge=0,
        description="Weight of the output-closeness term in the 'manipulate' loss.",
    )
    fragile_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Verdict 'fragile' when the top-k intersection of the most damaging "
        "label-preserving perturbation falls below this.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to run: 'auto' takes CUDA when it is available."
    )

    @field_validator("epsilon", "step_size", mode="before")
    @classmethod
    def _parse_fraction(cls, value: object, info) -> object:
        if value is None:
            return None
        return parse_fraction(value, info.field_name)

    @field_validator("epsilon")
    @classmethod
    def _check_epsilon(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(
                f"epsilon must be in (0, 1] pixel units (for example 8/255), got {value!r}"
            )
        return value

    @field_validator("step_size")
    @classmethod
    def _check_step_size(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value <= 1:
            raise ValueError(f"step_size must be in (0, 1] pixel units, got {value!r}")
        return value

    @field_validator("target_box")
    @classmethod
    def _check_box(cls, value: tuple[int, int, int, int] | None) -> object:
        if value is None:
            return None
        top, left, bottom, right = value
        if top < 0 or left < 0 or bottom <= top or right <= left:
            raise ValueError(
                "target_box must be [top, left, bottom, right) with 0 <= top < bottom and "
                f"0 <= left < right, got {list(value)}"
            )
        return value

    @model_validator(mode="after")
    def _check_attack_inputs(self, info: ValidationInfo) -> AuditParams:
        # A caller that supplies a mask image instead of a box validates with
        # context={"target_mask": True}.
        has_mask = bool(info.context and info.context.get("target_mask"))
        if self.attack in ("targeted", "manipulate") and self.target_box is None and not has_mask:
            raise ValueError(
                f"attack {self.attack!r} needs target_box [top, left, bottom, right) in pixels"
            )
        return self

    @property
    def resolved_step_size(self) -> float:
        """Step size in pixel units: the given one, or epsilon/16."""
        return self.step_size if self.step_size is not None else self.epsilon / 16
