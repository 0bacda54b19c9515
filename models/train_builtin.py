"""Train the bundled models on data that ships with scikit-learn and scikit-image.

Run from the repository root: ``python -m models.train_builtin [--only NAME]``. It writes, for
each model, ``models/builtin/NAME.safetensors``, the spec ``NAME.json``, the model card
``NAME.md`` and held-out sample images ``models/builtin/samples/NAME_*.png``.

The models:

- ``digits_cnn``: scikit-learn's 1,797 handwritten digits (8x8, 17 gray levels), upscaled to
  32x32 and quantised to 8 bits, ten classes.
- ``faces_cnn``: scikit-image's ``lfw_subset`` (100 faces and 100 non-face crops, 25x25),
  upscaled to 32x32, two classes.

Both use ``SmallCNN`` from models/architectures.py, a fixed seed, a stratified 75/25 split, and
record the held-out accuracy in the model card.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from sklearn.model_selection import train_test_split

from models.architectures import SmallCNN
from worker.audit.images import resize_pixels

logger = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
SEED = 0
INPUT_SIZE = (32, 32)


@dataclass
class Dataset:
    """Images as (N, 32, 32) uint8, labels (N,), class names and a one-line provenance."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    source: str


def upscale_to_uint8(images: np.ndarray, max_value: float) -> np.ndarray:
    """Scale (N, h, w) values in [0, max_value] to [0, 1], resize to 32x32, quantise to 8 bits.

    Quantising here makes the training inputs identical to what the sample PNGs decode to.
    """
    scaled = images.astype(np.float32) / max_value
    resized = [resize_pixels(image[:, :, None], INPUT_SIZE)[:, :, 0] for image in scaled]
    return np.round(np.stack(resized) * 255).astype(np.uint8)


def load_digits_dataset() -> Dataset:
    """scikit-learn's handwritten digits (values 0..16), upscaled to 32x32."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return Dataset(
        images=upscale_to_uint8(digits.images, 16.0),
        labels=digits.target.astype(np.int64),
        class_names=[str(d) for d in range(10)],
        source="scikit-learn load_digits (UCI optical recognition of handwritten digits), "
        "1,797 images of 8x8 pixels",
    )


def load_faces_dataset() -> Dataset:
    """scikit-image's lfw_subset: first 100 are faces (label 1), last 100 non-faces (label 0)."""
    from skimage.data import lfw_subset

    images = lfw_subset()  # (200, 25, 25) float in [0, 1]
    labels = np.array([1] * 100 + [0] * 100, dtype=np.int64)
    return Dataset(
        images=upscale_to_uint8(images, 1.0),
        labels=labels,
        class_names=["non-face", "face"],
        source="scikit-image data.lfw_subset (Labeled Faces in the Wild crops and non-face "
        "crops), 200 images of 25x25 pixels",
    )


@dataclass
class TrainingRecipe:
    """Training settings of one bundled model."""

    name: str
    load: Callable[[], Dataset]
    epochs: int
    batch_size: int
    learning_rate: float
    augment_shift: int  # max random translation in pixels during training


RECIPES = {
    "digits_cnn": TrainingRecipe("digits_cnn", load_digits_dataset, 60, 32, 3e-3, 2),
    "faces_cnn": TrainingRecipe("faces_cnn", load_faces_dataset, 60, 32, 2e-3, 2),
}


def random_shift(batch: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each (C, H, W) image by up to ``max_shift`` pixels, padding with zeros."""
    if max_shift == 0:
        return batch
    padded = F.pad(batch, (max_shift,) * 4)
    height, width = batch.shape[-2:]
    out = torch.empty_like(batch)
    offsets = torch.randint(0, 2 * max_shift + 1, (batch.shape[0], 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + height, dx : dx + width]
    return out


def train(recipe: TrainingRecipe) -> dict:
    """Train one model, write its files and return the model card's figures."""
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(SEED)
    data = recipe.load()
    indices = np.arange(len(data.labels))
    train_idx, test_idx = train_test_split(
        indices, test_size=0.25, random_state=SEED, stratify=data.labels
    )
    images = torch.from_numpy(data.images).float().div(255).unsqueeze(1)  # (N, 1, 32, 32)
    labels = torch.from_numpy(data.labels)
    mean = float(images[train_idx].mean())
    std = float(images[train_idx].std())

    model = SmallCNN(num_classes=len(data.class_names), channels=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    train_x = (images[train_idx] - mean) / std
    train_y = labels[train_idx]
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(train_idx), generator=generator)
        total_loss = 0.0
        for start in range(0, len(order), recipe.batch_size):
            batch = order[start : start + recipe.batch_size]
            inputs = random_shift(train_x[batch], recipe.augment_shift, generator)
            loss = F.cross_entropy(model(inputs), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
        scheduler.step()
        logger.info("%s epoch %d loss %.4f", recipe.name, epoch + 1, total_loss / len(order))

    model.eval()
    with torch.no_grad():
        test_x = (images[test_idx] - mean) / std
        predictions = model(test_x).argmax(1)
        accuracy = float((predictions == labels[test_idx]).float().mean())
        train_accuracy = float((model(train_x).argmax(1) == train_y).float().mean())

    BUILTIN_DIR.mkdir(parents=True, exist_ok=True)
    weights = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(weights, str(BUILTIN_DIR / f"{recipe.name}.safetensors"))
    spec = {
        "format": "builtin",
        "arch": "small_cnn",
        "weights": f"{recipe.name}.safetensors",
        "num_classes": len(data.class_names),
        "channels": 1,
        "input_size": list(INPUT_SIZE),
        "mean": [round(mean, 6)],
        "std": [round(std, 6)],
        "class_names": data.class_names,
    }
    (BUILTIN_DIR / f"{recipe.name}.json").write_text(json.dumps(spec, indent=2) + "\n")

    samples_dir = BUILTIN_DIR / "samples"
    samples_dir.mkdir(exist_ok=True)
    for old in samples_dir.glob(f"{recipe.name}_*.png"):
        old.unlink()
    # Two correctly classified held-out images per class, so demos and tests start from a
    # prediction the model gets right.
    written: list[str] = []
    for class_index, class_name in enumerate(data.class_names):
        chosen = [
            int(i)
            for i, p in zip(test_idx, predictions.tolist(), strict=True)
            if data.labels[i] == class_index and p == class_index
        ][:2]
        for i in chosen:
            filename = f"{recipe.name}_{class_name}_{i:04d}.png"
            Image.fromarray(data.images[i], mode="L").save(samples_dir / filename)
            written.append(filename)

    card = {
        "name": recipe.name,
        "test_accuracy": accuracy,
        "train_accuracy": train_accuracy,
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "samples": written,
    }
    write_model_card(recipe, data, spec, card)
    return card


def write_model_card(recipe: TrainingRecipe, data: Dataset, spec: dict, card: dict) -> None:
    """Write NAME.md with the data, the split, the recipe and the held-out accuracy."""
    text = f"""# Model card: `builtin:{recipe.name}`

- Data: {data.source}; inputs upscaled to 32x32 with a bilinear filter and quantised to 8 bits.
- Classes: {", ".join(data.class_names)}.
- Split: stratified, 75% train ({card["n_train"]} images) and 25% held-out test
  ({card["n_test"]} images), `random_state={SEED}`.
- Architecture: `small_cnn` (three 3x3 convolution blocks, global average pooling, linear),
  input 1x32x32 in [0, 1], normalised inside the wrapper with mean {spec["mean"][0]} and
  std {spec["std"][0]} (training-set statistics).
- Training: Adam, learning rate {recipe.learning_rate} with cosine decay, {recipe.epochs}
  epochs, batch {recipe.batch_size}, random shifts of up to {recipe.augment_shift} pixels,
  seed {SEED}, deterministic algorithms on.
- **Held-out test accuracy: {card["test_accuracy"]:.4f}** (train accuracy
  {card["train_accuracy"]:.4f}).
- Samples: `samples/{recipe.name}_*.png` are held-out test images that the model classifies
  correctly, two per class.
- Reproduce: `python -m models.train_builtin --only {recipe.name}` (CPU, under a minute).
"""
    (BUILTIN_DIR / f"{recipe.name}.md").write_text(text)


def main() -> None:
    """Train the models named by --only (default all) and print their held-out accuracy."""
    parser = argparse.ArgumentParser(description="Train the bundled models.")
    parser.add_argument("--only", choices=sorted(RECIPES), action="append")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.only or sorted(RECIPES):
        card = train(RECIPES[name])
        print(f"{name}: held-out test accuracy {card['test_accuracy']:.4f}")


if __name__ == "__main__":
    main()
