"""A TorchScript model audited end to end through the job runner.

TorchScript code does not dispatch through Python, so the softplus surrogate cannot replace its
ReLUs and the attack's gradient on the saliency map vanishes. The verdict must then be
inconclusive with a reason that names the gradient, never robust.
"""

from __future__ import annotations

import json
import warnings

import torch
from safetensors.torch import load_file

from models.architectures import SmallCNN
from models.spec import BUILTIN_DIR
from worker.audit.job import run_audit_job
from worker.audit.params import AuditParams
from worker.context import JobContext


def test_scripted_model_never_robust(tmp_path, digit_samples):
    network = SmallCNN(num_classes=10, channels=1)
    network.load_state_dict(load_file(str(BUILTIN_DIR / "digits_cnn.safetensors")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in torch 2.14
        torch.jit.save(torch.jit.script(network.eval()), str(tmp_path / "digits.pt"))
    builtin = json.loads((BUILTIN_DIR / "digits_cnn.json").read_text())
    spec = {key: builtin[key] for key in ("num_classes", "channels", "input_size", "mean", "std")}
    spec_path = tmp_path / "digits_scripted.json"
    spec_path.write_text(json.dumps({**spec, "format": "torchscript", "weights": "digits.pt"}))
    # A small budget keeps the random baseline from moving the map below the threshold, so
    # the verdict rests on the attack, whose gradient is zero.
    params = AuditParams(
        model=str(spec_path), attack="topk", epsilon="1/255", steps=6, seed=0, device="cpu"
    )

    report = run_audit_job(params, [digit_samples[6]], tmp_path / "out", JobContext())

    assert report["attack"]["surrogate"]["kind"] == "none"
    assert report["attack"]["zero_gradient_steps"] == 6
    assert report["metrics"]["topk_intersection"] == 1.0  # the map did not move
    assert report["verdict"] != "robust"
    assert report["verdict"] == "inconclusive"
    assert "gradient" in report["verdict_reason"]
    assert "TorchScript" in report["verdict_reason"]
    assert (tmp_path / "out" / "report.json").is_file()
