"""Time one attack iteration of the engine against a plain one-image-at-a-time loop.

For each model and batch size it prints the forward time, the time of one attack iteration, their
ratio and the peak memory, and the same figures for a plain loop, as a ratio per image and
iteration. Every configuration runs ``--repeats`` times, each in a fresh subprocess so that each
peak is its own. Times come from the fastest repeat, memory from the largest peak.

Engine iteration: one step of ``run_attack`` with the top-k attack on simple-gradient maps. A
step computes the surrogate map with create_graph, the gradient of the loss, the sign step and
the projection, then evaluates labels and maps on the original model for the selection. It is
timed as one ``run_attack`` of ``--steps`` steps after a one-step warm-up, divided by the steps
(and by the batch size for the per-image figure).

Plain loop: each image on its own, with no label check and no selection. Per step it sets
x.requires_grad and takes the target logit of the same smooth surrogate (activations replaced,
stock autograd for everything else). Then it computes the input gradient with create_graph and
the same top-k loss on its map, runs one backward, and takes the sign step and the projection.
It runs ``--steps`` steps on each of ``--plain-images`` images after a one-step warm-up.

Peak memory: on the CPU the peak resident set size of the process during the attack (VmHWM,
reset just before the attack through /proc/self/clear_refs where Linux allows it, else
ru_maxrss since the process started), and its increase over the resident size before the
attack. On CUDA, torch.cuda.max_memory_allocated and its increase.

Models: "resnet18" is torchvision's ResNet-18 with 1000 classes and random weights (seed 0) at
3x224x224, wrapped with the ImageNet mean and std; "builtin" is builtin:digits_cnn at 1x32x32.
Inputs are uniform random images (seed 0). The weights and pixels matter little for timing,
because every step runs the same operations on tensors of the same shapes.

Usage::

    .venv/bin/python bench/attack_speed.py                       # both models, batch 1 and 8
    .venv/bin/python bench/attack_speed.py --models builtin --batch-sizes 1 --steps 1
    .venv/bin/python bench/attack_speed.py --json attack_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODELS = ("resnet18", "builtin")
BUILTIN_REFERENCE = "builtin:digits_cnn"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
SEED = 0
# Timed steps when --steps is not given: a few at 224x224, enough at 32x32 that one iteration
# of a few milliseconds is not lost in timer and scheduling noise.
DEFAULT_STEPS = {"resnet18": 3, "builtin": 50}
FORWARD_MIN_REPEATS = 3
FORWARD_MIN_SECONDS = 0.5

# Targets checked after the table: at batch 8, the engine's time per image and iteration is at
# most 0.6 times the plain loop's, and every peak is under 3 GB.
TARGET_BATCH = 8
TARGET_RATIO = 0.6
MEMORY_LIMIT_BYTES = 3 * 10**9

MB = 10**6


def default_threads() -> int:
    """Return the number of cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# Child process: one configuration.


def read_status_bytes(key: str) -> int | None:
    """Return a field of /proc/self/status (given in kB there) in bytes, or None without it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the process's peak resident size (VmHWM) to the current one; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def max_rss_bytes() -> int:
    """Return ru_maxrss of this process in bytes (Linux reports kB, macOS bytes)."""
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def build_model(name: str, device: Any) -> tuple[Any, tuple[int, int, int]]:
    """Return (classifier on ``device`` in eval mode, input shape (C, H, W)) for a model name."""
    import torch

    if name == "resnet18":
        import torchvision

        from models.loading import NormalizedClassifier

        torch.manual_seed(SEED)
        network = torchvision.models.resnet18(num_classes=1000)
        model = NormalizedClassifier(network, IMAGENET_MEAN, IMAGENET_STD)
        return model.eval().to(device), (3, 224, 224)
    if name == "builtin":
        from models.loading import load_model

        loaded = load_model(BUILTIN_REFERENCE, device=device)
        spec = loaded.spec
        return loaded.model.eval(), (spec.channels, spec.input_size[0], spec.input_size[1])
    raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")


class Clock:
    """Wall-clock and process CPU time of a block, after synchronising CUDA work."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.wall_s = 0.0
        self.cpu_s = 0.0

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Clock:
        self._sync()
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._sync()
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = time.process_time() - self._cpu


def time_forward(model: Any, inputs: Any, device: Any) -> float:
    """Median wall time in seconds of no-grad forward passes, after one untimed pass.

    At least ``FORWARD_MIN_REPEATS`` passes, and more until they add up to
    ``FORWARD_MIN_SECONDS``.
    """
    import torch

    with torch.no_grad():
        model(inputs)
        times: list[float] = []
        while len(times) < FORWARD_MIN_REPEATS or sum(times) < FORWARD_MIN_SECONDS:
            with Clock(device) as clock:
                model(inputs)
            times.append(clock.wall_s)
    return statistics.median(times)


def add_timer(owner: Any, name: str, totals: dict[str, float], device: Any) -> None:
    """Wrap the method ``name`` of ``owner`` so that its wall time adds up in ``totals[name]``."""
    method = getattr(owner, name)
    totals[name] = 0.0

    def timed(*args: Any, **kwargs: Any) -> Any:
        with Clock(device) as clock:
            result = method(*args, **kwargs)
        totals[name] += clock.wall_s
        return result

    setattr(owner, name, timed)


def time_engine(
    model: Any, inputs: Any, config: dict[str, Any], device: Any
) -> tuple[Clock, dict[str, float]]:
    """Time ``run_attack`` over ``config["steps"]`` steps after a one-step warm-up.

    Returns the clock of the timed run and the wall seconds it spent in ``attack.direction``
    (the surrogate's map and the loss gradient) and in ``problem.evaluate`` (labels and maps on
    the original model), under the keys "direction" and "evaluate".
    """
    import torch

    from worker.audit.attacks import AttackProblem, build_attack, run_attack
    from worker.audit.metrics import default_k
    from worker.audit.params import AuditParams
    from worker.audit.saliency import SaliencyConfig, saliency_map
    from worker.audit.surrogate import SmoothSurrogate

    params = AuditParams(model=BUILTIN_REFERENCE)  # the audit's defaults; the model is not read
    saliency = SaliencyConfig.from_params(params)
    with torch.no_grad():
        target = model(inputs).argmax(1)
    original_maps = saliency_map(model, inputs, target, saliency).detach()
    surrogate = SmoothSurrogate(
        model, params.surrogate_beta, second_order_kernels=not config["stock_surrogate"]
    )
    problem = AttackProblem(
        model=model,
        surrogate=surrogate,
        config=saliency,
        inputs=inputs,
        target=target,
        original_maps=original_maps,
        k=default_k(inputs.shape[2], inputs.shape[3]),
        epsilon=params.epsilon,
        step_size=params.resolved_step_size,
        steps=1,
        generators=[torch.Generator().manual_seed(SEED + i) for i in range(inputs.shape[0])],
        mean=getattr(model, "mean", None),
    )
    attack = build_attack("topk", problem)
    run_attack(attack)  # warm-up: allocator, oneDNN primitives, autograd caches
    problem.steps = config["steps"]
    totals: dict[str, float] = {}
    add_timer(attack, "direction", totals, device)
    add_timer(problem, "evaluate", totals, device)
    with Clock(device) as clock:
        run_attack(attack)
    return clock, totals


def time_plain(model: Any, inputs: Any, config: dict[str, Any], device: Any) -> Clock:
    """Time the plain loop over ``config["plain_images"]`` images after a one-step warm-up."""
    import torch

    from worker.audit.metrics import default_k
    from worker.audit.metrics.topk import topk_mask
    from worker.audit.params import AuditParams
    from worker.audit.saliency import SaliencyConfig, saliency_map
    from worker.audit.surrogate import SmoothSurrogate

    params = AuditParams(model=BUILTIN_REFERENCE)
    epsilon, step_size = params.epsilon, params.resolved_step_size
    k = default_k(inputs.shape[2], inputs.shape[3])
    surrogate = SmoothSurrogate(model, params.surrogate_beta, second_order_kernels=False)
    with torch.no_grad():
        targets = model(inputs).argmax(1)
    saliency = SaliencyConfig.from_params(params)
    masks = topk_mask(saliency_map(model, inputs, targets, saliency).detach(), k)

    def attack_one(index: int, steps: int) -> None:
        original = inputs[index : index + 1]
        target = targets[index : index + 1].view(1, 1)
        mask = masks[index : index + 1]
        x = original.clone()
        for _ in range(steps):
            x.requires_grad_(True)
            logit = surrogate(x).gather(1, target).sum()
            (gradient,) = torch.autograd.grad(logit, x, create_graph=True)
            saliency = gradient.abs().sum(1)
            loss = -(saliency * mask).sum() / saliency.sum().clamp_min(1e-12)
            loss.backward()
            with torch.no_grad():
                x = x + step_size * x.grad.sign()
                x = (original + (x - original).clamp(-epsilon, epsilon)).clamp(0.0, 1.0)

    attack_one(0, 1)  # warm-up
    with Clock(device) as clock:
        for index in range(inputs.shape[0]):
            attack_one(index, config["steps"])
    return clock


def run_configuration(config: dict[str, Any]) -> dict[str, Any]:
    """Measure one configuration in this process and return its row (times in seconds)."""
    import torch

    from worker.audit.audit import resolve_device
    from worker.audit.model_state import frozen_for_audit

    torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])
    model, shape = build_model(config["model"], device)
    batch = config["batch"]
    # The plain loop takes its images one at a time; its forward time is at batch 1 too.
    images = batch if config["loop"] == "engine" else config["plain_images"]
    generator = torch.Generator().manual_seed(SEED)
    inputs = torch.rand((images, *shape), generator=generator).to(device)

    with frozen_for_audit(model):
        forward_s = time_forward(model, inputs[:batch], device)
        if device.type == "cuda":
            # NOTE: the CUDA branch (timing and memory) has not been run yet, for lack of a GPU.
            torch.cuda.reset_peak_memory_stats(device)
            memory_before = torch.cuda.memory_allocated(device)
            memory_kind = "cuda max_memory_allocated"
        else:
            peak_was_reset = reset_peak_rss()
            memory_before = read_status_bytes("VmRSS") or max_rss_bytes()
            memory_kind = "VmHWM" if peak_was_reset else "ru_maxrss"

        parts: dict[str, float] = {}
        if config["loop"] == "engine":
            clock, parts = time_engine(model, inputs, config, device)
        else:
            clock = time_plain(model, inputs, config, device)

        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
        elif memory_kind == "VmHWM":
            peak = read_status_bytes("VmHWM") or max_rss_bytes()
        else:
            peak = max_rss_bytes()

    iterations = config["steps"] * (1 if config["loop"] == "engine" else images)
    iteration_s = clock.wall_s / iterations
    per_image_s = clock.wall_s / (config["steps"] * images)
    return {
        **config,
        "input_shape": list(shape),
        "device_name": str(device),
        "forward_s": forward_s,
        "iteration_s": iteration_s,
        "per_image_iteration_s": per_image_s,
        "iteration_over_forward": iteration_s / forward_s,
        "per_image_iteration_cpu_s": clock.cpu_s / (config["steps"] * images),
        # Engine only: the parts of one iteration, per image.
        **{
            f"per_image_{name}_s": total / (config["steps"] * images)
            for name, total in parts.items()
        },
        "peak_memory_bytes": peak,
        "memory_increase_bytes": peak - memory_before,
        "memory_kind": memory_kind,
    }


# ---------------------------------------------------------------------------------------------
# Parent process: run every configuration, print the table, check the targets.


def run_child(config: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in a fresh Python process and return its row."""
    command = [sys.executable, str(Path(__file__).resolve()), "--run-config", json.dumps(config)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise RuntimeError(
            f"configuration {config} failed with exit code {completed.returncode}:\n{tail}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def combine_repeats(config_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine the repeats of one configuration into its row.

    Times come from the fastest repeat (the one least disturbed by other processes; the forward
    time is the smallest median), memory from the largest peak.
    """
    fastest = min(config_runs, key=lambda run: run["per_image_iteration_s"])
    row = dict(fastest)
    row["forward_s"] = min(run["forward_s"] for run in config_runs)
    row["iteration_over_forward"] = row["iteration_s"] / row["forward_s"]
    row["peak_memory_bytes"] = max(run["peak_memory_bytes"] for run in config_runs)
    row["memory_increase_bytes"] = max(run["memory_increase_bytes"] for run in config_runs)
    row["repeats"] = [
        {key: run[key] for key in ("forward_s", "per_image_iteration_s", "peak_memory_bytes")}
        for run in config_runs
    ]
    return row


def add_plain_ratios(rows: list[dict[str, Any]]) -> None:
    """Set "vs_plain" on each engine row: its per-image iteration time over the plain loop's."""
    plain = {row["model"]: row for row in rows if row["loop"] == "plain"}
    for row in rows:
        reference = plain.get(row["model"])
        if row["loop"] == "engine" and reference is not None:
            row["vs_plain"] = row["per_image_iteration_s"] / reference["per_image_iteration_s"]


def format_table(rows: list[dict[str, Any]]) -> str:
    """Return the rows as a Markdown table (times in ms, memory in MB of 10^6 bytes)."""
    lines = [
        "| model | input | loop | batch | steps | forward ms | iteration ms | per image ms "
        "| iteration / forward | per image vs plain | peak MB | increase MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        shape = "x".join(str(size) for size in row["input_shape"])
        ratio = f"{row['vs_plain']:.2f}x" if "vs_plain" in row else "1 (reference)"
        lines.append(
            f"| {row['model']} | {shape} | {row['loop']} | {row['batch']} | {row['steps']} "
            f"| {row['forward_s'] * 1e3:.1f} | {row['iteration_s'] * 1e3:.1f} "
            f"| {row['per_image_iteration_s'] * 1e3:.1f} | {row['iteration_over_forward']:.1f} "
            f"| {ratio} | {row['peak_memory_bytes'] / MB:.0f} "
            f"| {row['memory_increase_bytes'] / MB:.0f} |"
        )
    return "\n".join(lines)


def format_breakdown(rows: list[dict[str, Any]]) -> str:
    """Return a Markdown table of where an engine iteration spends its time, per image in ms."""
    lines = [
        "| model | batch | per image ms | surrogate map and loss gradient ms "
        "| evaluation on the original model ms | rest ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["loop"] != "engine":
            continue
        total = row["per_image_iteration_s"]
        direction = row["per_image_direction_s"]
        evaluation = row["per_image_evaluate_s"]
        lines.append(
            f"| {row['model']} | {row['batch']} | {total * 1e3:.1f} | {direction * 1e3:.1f} "
            f"| {evaluation * 1e3:.1f} | {(total - direction - evaluation) * 1e3:.1f} |"
        )
    return "\n".join(lines)


def check_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Compare the rows with the targets; return {"speed": {model: {...}}, "memory": {...}}."""
    speed = {}
    for row in rows:
        if row["loop"] == "engine" and row["batch"] == TARGET_BATCH and "vs_plain" in row:
            speed[row["model"]] = {"ratio": row["vs_plain"], "met": row["vs_plain"] <= TARGET_RATIO}
    peak = max(row["peak_memory_bytes"] for row in rows)
    memory = {"max_peak_bytes": peak, "met": peak < MEMORY_LIMIT_BYTES}
    return {"speed": speed, "memory": memory}


def format_targets(targets: dict[str, Any]) -> str:
    """Return one line per target: the measured figure and whether it is met."""
    lines = []
    if not targets["speed"]:
        lines.append(
            f"speed target: not checked, it needs batch {TARGET_BATCH} and the plain loop "
            "of the same model"
        )
    for model, result in targets["speed"].items():
        verdict = "met" if result["met"] else "NOT met"
        lines.append(
            f"speed target ({model}): per image and iteration at batch {TARGET_BATCH} is "
            f"{result['ratio']:.2f}x the plain loop, target <= {TARGET_RATIO}x: {verdict}"
        )
    memory = targets["memory"]
    verdict = "met" if memory["met"] else "NOT met"
    lines.append(
        f"memory target: largest peak {memory['max_peak_bytes'] / MB:.0f} MB, "
        f"target < {MEMORY_LIMIT_BYTES / MB:.0f} MB: {verdict}"
    )
    return "\n".join(lines)


def machine_description(threads: int) -> dict[str, Any]:
    """Return the machine facts the record needs; imports torch for its version only."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores_available": default_threads(),
        "torch": torch.__version__,
        "threads": threads,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def positive_int(text: str) -> int:
    """Parse a positive integer for argparse."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=positive_int,
        help="timed attack steps for every model (default: 3 for resnet18, 50 for builtin)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=list(MODELS),
        help="models to time (default: both)",
    )
    parser.add_argument(
        "--batch-sizes",
        nargs="+",
        type=positive_int,
        default=[1, 8],
        help="engine batch sizes (default 1 8)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=3,
        help="fresh processes per configuration; times are taken from the fastest (default 3)",
    )
    parser.add_argument(
        "--plain-images",
        type=positive_int,
        default=2,
        help="images the plain loop attacks one after another (default 2)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to run; auto takes CUDA when it is available (default auto)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=default_threads(),
        help=f"torch.set_num_threads in each run (default: all {default_threads()} cores)",
    )
    parser.add_argument(
        "--stock-surrogate",
        action="store_true",
        help="time the engine without the surrogate's second-order conv2d kernels, to measure "
        "what they save",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--run-config", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; return 0, or 2 when a configuration failed."""
    args = parse_arguments(argv)
    if args.run_config:
        print(json.dumps(run_configuration(json.loads(args.run_config))))
        return 0

    common = {
        "plain_images": args.plain_images,
        "device": args.device,
        "threads": args.threads,
        "stock_surrogate": args.stock_surrogate,
    }
    configs = []
    for model in args.models:
        steps = args.steps or DEFAULT_STEPS[model]
        configs.append({"loop": "plain", "model": model, "batch": 1, "steps": steps, **common})
        for batch in args.batch_sizes:
            configs.append(
                {"loop": "engine", "model": model, "batch": batch, "steps": steps, **common}
            )

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    started = time.perf_counter()
    runs: list[list[dict[str, Any]]] = [[] for _ in configs]
    # Repeats go round all configurations, so a burst of load from other processes does not
    # hit every repeat of one configuration.
    for repeat in range(1, args.repeats + 1):
        for config, config_runs in zip(configs, runs, strict=True):
            print(
                f"repeat {repeat}/{args.repeats}: {config['model']} {config['loop']} "
                f"batch {config['batch']}",
                flush=True,
            )
            try:
                config_runs.append(run_child(config))
            except RuntimeError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
    rows = [combine_repeats(config_runs) for config_runs in runs]
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    add_plain_ratios(rows)
    targets = check_targets(rows)

    machine = machine_description(args.threads)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print()
    load = (
        "n/a" if load_before is None else f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        f"torch {machine['torch']}, {args.threads} threads of {machine['cores_available']} "
        f"cores, device {rows[0]['device_name']}, 1-minute load average {load}, "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    print(format_table(rows))
    print()
    print(format_breakdown(rows))
    print()
    print(format_targets(targets))

    if args.json is not None:
        record = {
            "command": command,
            "machine": machine,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "configurations": rows,
            "targets": targets,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
