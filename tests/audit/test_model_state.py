"""The audit leaves the caller's model as found: training flag, requires_grad and weights.

Checked after a normal audit, after one that raised inside the attack, and after one cancelled
through its JobContext.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.spec import ModelSpecError
from worker.audit.audit import AuditInput, audit_images
from worker.audit.job import prepare_input
from worker.audit.params import AuditParams
from worker.context import JobCancelled, JobContext

PARAMS = AuditParams(model="builtin:digits_cnn", attack="topk", steps=4, device="cpu")


def snapshot(model: torch.nn.Module) -> dict:
    return {
        "training": {name: module.training for name, module in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "weights": {name: t.detach().clone() for name, t in model.state_dict().items()},
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    for name, tensor in before["weights"].items():
        assert torch.equal(after["weights"][name], tensor), f"weight {name} changed"


@pytest.fixture
def item(digits_model, digit_samples) -> AuditInput:
    return prepare_input(digit_samples[0], digits_model, 10**6)


def test_train_mode_and_grad_restored(digits_model, item):
    model = digits_model.model
    model.train()
    before = snapshot(model)
    assert all(before["requires_grad"].values())

    audit_images(digits_model, [item], PARAMS)

    assert model.training is True
    assert_same_state(before, snapshot(model))


def test_eval_mode_and_mixed_grad_restored(digits_model, item):
    model = digits_model.model
    model.eval()
    model.network.conv1.weight.requires_grad_(False)
    model.network.classifier.bias.requires_grad_(False)
    before = snapshot(model)

    audit_images(digits_model, [item], PARAMS)

    assert model.training is False
    assert_same_state(before, snapshot(model))


def test_state_restored_after_error(digits_model, item):
    """NaN pixels give NaN logits, which the audit rejects inside its frozen section."""
    model = digits_model.model
    model.train()
    before = snapshot(model)
    bad = AuditInput(
        pixels=np.full_like(item.pixels, np.nan), sha256="0" * 64, source=dict(item.source)
    )

    with pytest.raises(ModelSpecError, match="NaN"):
        audit_images(digits_model, [bad], PARAMS)

    assert model.training is True
    assert_same_state(before, snapshot(model))


def test_state_restored_after_error_in_attack(digits_model, item):
    model = digits_model.model
    model.train()
    before = snapshot(model)
    calls = []

    def failing_progress(fraction: float, message: str) -> None:
        calls.append(fraction)
        if len(calls) == 2:
            raise RuntimeError("progress sink failed")

    with pytest.raises(RuntimeError, match="progress sink failed"):
        audit_images(digits_model, [item], PARAMS, JobContext(on_progress=failing_progress))

    assert model.training is True
    assert_same_state(before, snapshot(model))


def test_state_restored_after_cancel(digits_model, item):
    model = digits_model.model
    model.train()
    before = snapshot(model)
    checks = []

    def cancelled_after_two_steps() -> bool:
        checks.append(True)
        return len(checks) > 2

    context = JobContext(job_id="t1", is_cancelled=cancelled_after_two_steps)
    with pytest.raises(JobCancelled):
        audit_images(digits_model, [item], PARAMS, context)

    assert len(checks) == 3  # the attack had started before it was cancelled
    assert model.training is True
    assert_same_state(before, snapshot(model))
