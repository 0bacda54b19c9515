"""Run the audit on a batch of images: maps, the attack, the random baseline, metrics, verdict."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.loading import LoadedModel
from models.spec import ModelSpecError
from worker.audit.attacks import AttackOutcome, AttackProblem, build_attack, run_attack
from worker.audit.attacks.random_sign import RandomSignAttack
from worker.audit.metrics import compare_maps, default_k
from worker.audit.model_state import frozen_for_audit
from worker.audit.params import AuditParams
from worker.audit.saliency import SaliencyConfig, saliency_map
from worker.audit.saliency.smoothgrad import smoothgrad_noise
from worker.audit.surrogate import SmoothSurrogate
from worker.audit.verdict import decide_verdict
from worker.context import JobContext

logger = logging.getLogger(__name__)


SELECTION_RULES = {
    "topk": "minus the top-k intersection (larger is more moved)",
    "random": "minus the top-k intersection (larger is more moved)",
    "center_of_mass": "centre-of-mass shift in pixels",
    "targeted": "share of the map inside the target region",
    "manipulate": "minus H*W times the squared distance to the target map",
}


@dataclass
class AuditInput:
    """One image prepared for the model.

    Attributes:
        pixels: (C, H, W) float32 in [0, 1], already at the model's channels and input size.
        sha256: SHA-256 of the input file.
        source: what the report records about the file (format, bit depth, size, conversions).
    """

    pixels: np.ndarray
    sha256: str
    source: dict[str, Any] = field(default_factory=dict)


@dataclass
class AuditResult:
    """One image's audit: the report fields and the tensors the figures are drawn from.

    Tensors are on the CPU: images (C, H, W) in [0, 1] and maps (H, W).
    """

    report: dict[str, Any]
    original: torch.Tensor
    perturbed: torch.Tensor
    baseline: torch.Tensor
    rounded: torch.Tensor
    original_map: torch.Tensor
    perturbed_map: torch.Tensor
    baseline_map: torch.Tensor
    k: int


def resolve_device(name: str) -> torch.device:
    """Map "auto", "cpu" or "cuda" to a torch.device; "cuda" without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was requested but CUDA is not available; use 'auto' or 'cpu'"
        )
    return torch.device(name)


def derived_seed(seed: int, input_sha256: str, purpose: str) -> int:
    """Return a 63-bit seed derived from the audit seed, the input's hash and a purpose label.

    Each image's random draws then depend only on the seed and the image, not on the batch.
    """
    digest = hashlib.sha256(f"{seed}:{input_sha256}:{purpose}".encode()).hexdigest()
    return int(digest[:15], 16)


def box_mask(box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Return an (H, W) float mask that is 1 inside [top, bottom) x [left, right).

    Raises:
        ValueError: the box is empty or not inside the model's input.
    """
    top, left, bottom, right = box
    height, width = size
    if bottom > height or right > width:
        raise ValueError(
            f"target_box {list(box)} does not fit the model's {height}x{width} input; give "
            f"[top, left, bottom, right) with bottom <= {height} and right <= {width}"
        )
    mask = np.zeros(size, dtype=np.float32)
    mask[top:bottom, left:right] = 1.0
    return mask


def check_k(k: int, size: tuple[int, int]) -> None:
    """Raise ValueError unless 1 <= k <= H*W."""
    pixels = size[0] * size[1]
    if not 1 <= k <= pixels:
        raise ValueError(
            f"k={k} is outside 1..{pixels}, the number of pixels of the model's "
            f"{size[0]}x{size[1]} input; give a smaller --k or omit it for 2% of the pixels"
        )


def _check_logits(logits: torch.Tensor, loaded: LoadedModel, batch: int) -> None:
    expected = (batch, loaded.spec.num_classes)
    if tuple(logits.shape) != expected:
        raise ModelSpecError(
            f"model {loaded.reference!r} returned output of shape {tuple(logits.shape)}, "
            f"expected (N, num_classes) = {expected}"
        )
    if not torch.isfinite(logits).all():
        raise ModelSpecError(
            f"model {loaded.reference!r} returned NaN or infinite logits on the input image; "
            "check the weights and the input"
        )


def audit_images(
    loaded: LoadedModel,
    items: list[AuditInput],
    params: AuditParams,
    context: JobContext | None = None,
    target_mask: np.ndarray | None = None,
) -> list[AuditResult]:
    """Audit a batch of images that share a model and parameters.

    Args:
        loaded: the model, from models.loading.load_model.
        items: images already converted to the model's input (see worker.audit.images).
        params: the audit parameters.
        context: progress and cancellation; progress runs 0..0.7 for the attack and 0.7..0.95
            for the random baseline.
        target_mask: (H, W) region for the targeted and manipulate attacks; overrides
            ``params.target_box``.

    Returns:
        One AuditResult per item, in order.

    Raises:
        ValueError: invalid k, target region or device; ModelSpecError for bad model output.
        JobCancelled: the context's job was cancelled.
    """
    context = context or JobContext()
    started = time.perf_counter()
    device = resolve_device(params.device)
    spec = loaded.spec
    size = (spec.input_size[0], spec.input_size[1])
    k = params.k if params.k is not None else default_k(*size)
    check_k(k, size)
    if target_mask is None and params.target_box is not None:
        target_mask = box_mask(params.target_box, size)
    config = SaliencyConfig.from_params(params)
    model = loaded.model.to(device)

    with frozen_for_audit(model):
        inputs = torch.from_numpy(np.stack([item.pixels for item in items])).to(device)
        batch = inputs.shape[0]
        with torch.no_grad():
            logits = model(inputs)
        _check_logits(logits, loaded, batch)
        probs = logits.softmax(1)
        target = logits.argmax(1)

        noise = None
        if config.method == "smoothgrad":
            noise = torch.stack(
                [
                    smoothgrad_noise(
                        tuple(inputs.shape[1:]),
                        config.smoothgrad_samples,
                        config.smoothgrad_noise,
                        torch.Generator().manual_seed(derived_seed(params.seed, i.sha256, "noise")),
                    )
                    for i in items
                ],
                dim=1,
            ).to(device)  # (S, N, C, H, W)
        mean = getattr(model, "mean", None)
        original_maps = saliency_map(model, inputs, target, config, False, noise, mean).detach()

        if loaded.scripted:
            # NOTE: TorchScript code does not dispatch through Python, so no activation can be
            # smoothed; the attack differentiates the model itself and its gradient may vanish.
            surrogate: torch.nn.Module = model
            surrogate_info: dict[str, Any] = {"kind": "none", "reason": "TorchScript model"}
        else:
            surrogate = SmoothSurrogate(model, params.surrogate_beta)
            surrogate_info = {"kind": "softplus", "beta": params.surrogate_beta}

        def problem_for(purpose: str) -> AttackProblem:
            return AttackProblem(
                model=model,
                surrogate=surrogate,
                config=config,
                inputs=inputs,
                target=target,
                original_maps=original_maps,
                k=k,
                epsilon=params.epsilon,
                step_size=params.resolved_step_size,
                steps=params.steps,
                generators=[
                    torch.Generator().manual_seed(derived_seed(params.seed, i.sha256, purpose))
                    for i in items
                ],
                noise=noise,
                mean=mean,
                target_mask=(
                    torch.from_numpy(target_mask).to(device).expand(batch, *size)
                    if target_mask is not None
                    else None
                ),
                original_probs=probs,
            )

        attack = build_attack(params.attack, problem_for("attack"), params.manipulate_gamma)
        outcome = run_attack(attack, context.scaled(0.0, 0.7))
        if isinstance(surrogate, SmoothSurrogate):
            surrogate_info["replaced_calls"] = dict(surrogate.replaced_calls)
        baseline_attack = RandomSignAttack(
            attack.criterion if isinstance(attack, RandomSignAttack) else attack
        )
        baseline_attack.problem = problem_for("baseline")
        baseline = run_attack(baseline_attack, context.scaled(0.7, 0.95))

        # The selection score of the unperturbed input, so a reader sees how far it moved.
        original_scores = attack.dissimilarity(original_maps).cpu()
        rounded = torch.round(outcome.perturbed * 255) / 255
        problem = attack.problem
        perturbed_logits, perturbed_maps = problem.evaluate(outcome.perturbed)
        baseline_logits, baseline_maps = problem.evaluate(baseline.perturbed)
        rounded_logits, rounded_maps = problem.evaluate(rounded)

    elapsed = time.perf_counter() - started
    results = []
    for i, item in enumerate(items):
        report = _image_report(
            loaded=loaded,
            params=params,
            item=item,
            index=i,
            k=k,
            target=target,
            probs=probs,
            original_maps=original_maps,
            outcome=outcome,
            attack_uses_gradient=attack.uses_gradient,
            original_scores=original_scores,
            perturbed_logits=perturbed_logits,
            perturbed_maps=perturbed_maps,
            baseline=baseline,
            baseline_logits=baseline_logits,
            baseline_maps=baseline_maps,
            rounded_logits=rounded_logits,
            rounded_maps=rounded_maps,
            inputs=inputs,
            rounded=rounded,
            surrogate_info=surrogate_info,
            device=device,
        )
        report["run_seconds"] = elapsed / batch
        report["batch_size"] = batch
        results.append(
            AuditResult(
                report=report,
                original=inputs[i].cpu(),
                perturbed=outcome.perturbed[i].cpu(),
                baseline=baseline.perturbed[i].cpu(),
                rounded=rounded[i].cpu(),
                original_map=original_maps[i].cpu(),
                perturbed_map=perturbed_maps[i].cpu(),
                baseline_map=baseline_maps[i].cpu(),
                k=k,
            )
        )
    context.progress(0.95, "metrics done")
    logger.info("audited %d image(s) in %.2f s on %s", batch, elapsed, device)
    return results


def _perturbation_norms(perturbed: torch.Tensor, original: torch.Tensor) -> dict[str, float]:
    delta = (perturbed - original).flatten()
    return {
        "linf": float(delta.abs().max()),
        "l2": float(delta.norm()),
        "linf_in_8bit_levels": float(delta.abs().max() * 255),
    }


def _image_report(
    *,
    loaded: LoadedModel,
    params: AuditParams,
    item: AuditInput,
    index: int,
    k: int,
    target: torch.Tensor,
    probs: torch.Tensor,
    original_maps: torch.Tensor,
    outcome: AttackOutcome,
    attack_uses_gradient: bool,
    original_scores: torch.Tensor,
    perturbed_logits: torch.Tensor,
    perturbed_maps: torch.Tensor,
    baseline: AttackOutcome,
    baseline_logits: torch.Tensor,
    baseline_maps: torch.Tensor,
    rounded_logits: torch.Tensor,
    rounded_maps: torch.Tensor,
    inputs: torch.Tensor,
    rounded: torch.Tensor,
    surrogate_info: dict[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    """Assemble one image's report (everything but the software versions and artifacts)."""
    i = index
    original_label = int(target[i])
    original_map = original_maps[i].cpu()

    def label_block(logits: torch.Tensor) -> dict[str, Any]:
        p = logits[i].softmax(0)
        label = int(p.argmax())
        return {
            "original": original_label,
            "original_name": loaded.class_name(original_label),
            "original_confidence": float(probs[i, original_label]),
            "perturbed": label,
            "perturbed_name": loaded.class_name(label),
            "perturbed_confidence": float(p[label]),
            "preserved": label == original_label,
        }

    metrics = compare_maps(original_map, perturbed_maps[i].cpu(), k).as_dict()
    baseline_metrics = compare_maps(original_map, baseline_maps[i].cpu(), k).as_dict()
    rounded_metrics = compare_maps(original_map, rounded_maps[i].cpu(), k).as_dict()
    found = bool(outcome.found[i])
    baseline_found = bool(baseline.found[i])
    usable_steps = outcome.steps - int(outcome.zero_gradient_steps[i])
    verdict = decide_verdict(
        original_map_is_zero=bool(original_map.abs().max() == 0),
        attack_name=outcome.name,
        attack_found=found,
        attack_topk=metrics["topk_intersection"],
        attack_gradient_steps=usable_steps,
        attack_uses_gradient=attack_uses_gradient,
        baseline_found=baseline_found,
        baseline_topk=baseline_metrics["topk_intersection"],
        steps=outcome.steps,
        threshold=params.fragile_threshold,
        epsilon=params.epsilon,
        step_size=params.resolved_step_size,
    )
    warnings = []
    nonzero = int((original_map != 0).sum())
    if nonzero < k:
        warnings.append(
            f"only {nonzero} pixels of the original map are non-zero, fewer than k={k}; the "
            "top-k set includes tied zero pixels, so top-k intersection is partly arbitrary"
        )
    if 0 < usable_steps < outcome.steps and attack_uses_gradient:
        warnings.append(
            f"the attack gradient was unusable at {outcome.steps - usable_steps} of "
            f"{outcome.steps} steps"
        )
    rounded_label = int(rounded_logits[i].argmax())
    return {
        "input": {"sha256": item.sha256, **item.source},
        "model": {
            "reference": loaded.reference,
            "format": loaded.spec.format,
            "arch": loaded.spec.arch,
            "weights_sha256": loaded.weights_sha256,
            "spec_sha256": loaded.spec_sha256,
            "num_classes": loaded.spec.num_classes,
            "channels": loaded.spec.channels,
            "input_size": list(loaded.spec.input_size),
        },
        "params": {**params.model_dump(), "k": k, "step_size": params.resolved_step_size},
        "seed": params.seed,
        "device": str(device),
        "label": label_block(perturbed_logits),
        "perturbation": _perturbation_norms(outcome.perturbed[i], inputs[i]),
        "metrics": metrics,
        "attack": {
            "name": outcome.name,
            "found_label_preserving": found,
            "steps": outcome.steps,
            "best_step": int(outcome.best_step[i]),
            "selection_score": float(outcome.score[i]),
            "selection_score_original": float(original_scores[i]),
            "selection_rule": SELECTION_RULES[outcome.name],
            "label_preserving_steps": int(outcome.label_preserving_steps[i]),
            "zero_gradient_steps": int(outcome.zero_gradient_steps[i]),
            "surrogate": surrogate_info,
        },
        "baseline": {
            "attack": "random",
            "found_label_preserving": baseline_found,
            "label": label_block(baseline_logits),
            "perturbation": _perturbation_norms(baseline.perturbed[i], inputs[i]),
            "metrics": baseline_metrics,
        },
        "rounded_8bit": {
            "label": rounded_label,
            "preserved": rounded_label == original_label,
            "perturbation": _perturbation_norms(rounded[i], inputs[i]),
            "metrics": rounded_metrics,
        },
        "verdict": verdict.verdict,
        "verdict_reason": verdict.reason,
        "thresholds": {"fragile_threshold": params.fragile_threshold},
        "warnings": warnings,
    }
