"""Validation of AuditParams, which the CLI, the API and the worker share."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from worker.audit.params import AuditParams, parse_fraction


def params(**fields) -> AuditParams:
    return AuditParams.model_validate({"model": "builtin:digits_cnn", **fields})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8/255", 8 / 255), (" 0.03 ", 0.03), ("1", 1.0), (0.5, 0.5), (2, 2.0)],
)
def test_parse_fraction_accepts(text, expected):
    assert parse_fraction(text) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["eight", "1/0", "", True, None, [0.1]])
def test_parse_fraction_rejects(value):
    with pytest.raises(ValueError, match="epsilon must be a number") as caught:
        parse_fraction(value, "epsilon")
    assert repr(value) in str(caught.value)


def test_defaults():
    result = params()

    assert result.epsilon == pytest.approx(8 / 255)
    assert result.resolved_step_size == pytest.approx(8 / 255 / 16)
    assert result.steps == 100
    assert result.k is None
    assert result.method == "gradient"
    assert result.attack == "topk"


def test_fraction_strings_accepted():
    result = params(epsilon="4/255", step_size="1/255")

    assert result.epsilon == pytest.approx(4 / 255)
    assert result.resolved_step_size == pytest.approx(1 / 255)


@pytest.mark.parametrize("epsilon", [0, -0.1, 1.0001, "0/255", "300/255"])
def test_epsilon_out_of_range_rejected(epsilon):
    with pytest.raises(ValidationError, match=r"epsilon must be in \(0, 1\]"):
        params(epsilon=epsilon)


def test_epsilon_one_accepted():
    assert params(epsilon=1).epsilon == 1.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "gradcam"),
        ("attack", "pgd"),
        ("steps", 0),
        ("k", 0),
        ("step_size", 0),
        ("smoothgrad_noise", 0),
        ("ig_steps", 1),
        ("fragile_threshold", 0),
        ("device", "tpu"),
        ("seed", -1),
    ],
)
def test_invalid_field_rejected(field, value):
    with pytest.raises(ValidationError) as caught:
        params(**{field: value})
    assert caught.value.errors()[0]["loc"] == (field,)


def test_unknown_field_rejected():
    with pytest.raises(ValidationError, match="extra"):
        params(epsilonn=0.1)


@pytest.mark.parametrize("attack", ["targeted", "manipulate"])
def test_region_attacks_need_target_box(attack):
    with pytest.raises(ValidationError, match=f"attack '{attack}' needs target_box"):
        params(attack=attack)
    assert params(attack=attack, target_box=[0, 0, 4, 4]).target_box == (0, 0, 4, 4)


@pytest.mark.parametrize("box", [[4, 0, 4, 8], [0, 8, 4, 2], [-1, 0, 4, 4]])
def test_empty_or_negative_box_rejected(box):
    with pytest.raises(ValidationError, match="target_box must be"):
        params(attack="targeted", target_box=box)
