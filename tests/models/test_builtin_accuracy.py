"""The model card of builtin:digits_cnn against a recomputation on its held-out split.

The split is rebuilt exactly as models/train_builtin.py builds it: the same dataset loader,
scikit-learn's stratified train_test_split with test_size 0.25 and the same seed.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.model_selection import train_test_split

from models.spec import BUILTIN_DIR
from models.train_builtin import SEED, load_digits_dataset

CARD = BUILTIN_DIR / "digits_cnn.md"


@pytest.fixture(scope="module")
def held_out():
    """(dataset, test indices) of the digits split used for training."""
    data = load_digits_dataset()
    indices = np.arange(len(data.labels))
    _, test_idx = train_test_split(indices, test_size=0.25, random_state=SEED, stratify=data.labels)
    return data, test_idx


def card_number(pattern: str) -> str:
    match = re.search(pattern, CARD.read_text(encoding="utf-8"))
    assert match is not None, f"{pattern!r} not found in {CARD}"
    return match.group(1)


def test_card_accuracy_recomputed(digits_model, held_out):
    data, test_idx = held_out
    images = torch.from_numpy(data.images[test_idx]).float().div(255).unsqueeze(1)
    with torch.no_grad():
        predictions = digits_model.model(images).argmax(1).numpy()
    accuracy = float((predictions == data.labels[test_idx]).mean())

    card_accuracy = float(card_number(r"Held-out test accuracy: ([0-9.]+)"))
    card_test_images = int(card_number(r"held-out test\s+\((\d+) images\)"))

    assert len(test_idx) == card_test_images
    assert accuracy >= 0.95
    # The card rounds to 4 decimals; one image is 1/450 = 0.0022.
    assert accuracy == pytest.approx(card_accuracy, abs=5e-5)


def test_samples_are_correct_held_out_images(digits_model, held_out, digit_samples):
    data, test_idx = held_out
    held_out_set = set(test_idx.tolist())
    for path in digit_samples:
        # digits_cnn_<class>_<dataset index>.png
        _, _, class_name, index_text = path.stem.split("_")
        index = int(index_text)
        pixels = np.array(Image.open(path))
        inputs = torch.from_numpy(pixels).float().div(255)[None, None]
        with torch.no_grad():
            predicted = int(digits_model.model(inputs).argmax(1))

        assert index in held_out_set, f"{path.name} is not in the held-out split"
        assert data.labels[index] == int(class_name), path.name
        np.testing.assert_array_equal(pixels, data.images[index], err_msg=path.name)
        assert predicted == int(class_name), path.name
