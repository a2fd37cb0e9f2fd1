"""Transfer learning: start a run from pretrained weights, with a new classifier and frozen stages.

`cnnzoo train MODEL --init WEIGHTS --num-classes N [--freeze STAGE] [--backbone-lr-scale S]`.

WEIGHTS is read (tensors only: `torch.load(weights_only=True)` or safetensors) as one of:

- a cnnzoo checkpoint (`best.pt`, `last.pt`): the weights its validation used (the EMA when
  the run kept one), with the builder options it records;
- a cnnzoo safetensors export (`cnnzoo export --format safetensors`), likewise;
- a plain state dict: a `.pth`/`.pt` file of tensors such as torchvision's
  `resnet50-11ad3fa6.pth` (also under a "state_dict" or "model" key, and with DDP's
  "module." prefix removed), or a `.safetensors` file without cnnzoo metadata (timm's hub
  files). It is recognised by its keys: tried with torchvision's names, then timm's, then
  cnnzoo's own, through the per-model key rules of `cnnzoo.models.convert` (so the builder
  options a reference layout needs, e.g. GoogLeNet's `torchvision_compat`, are applied too).
  ResNets have the same names in torchvision and timm; such a file is reported as torchvision's.

`prepare` does it all for the loop: plan the reading, build the model, load it, freeze.
`load_backbone` copies every tensor into the model built for the new number of classes
except the classifier tensors whose shape differs: those keep their fresh initialisation
and are reported. A classifier is a Linear layer with `num_classes` outputs (the classifier,
and GoogLeNet's auxiliary ones); a zoo model has no per-family reset method, and needs none.
Anything else that does not fit (missing or unexpected keys, a backbone tensor of another
shape) is an error naming the first of each and their counts: the file holds another
architecture or another configuration.

`--freeze STAGE` stops gradients in the stem and every stage up to and including STAGE (a
module name of `model.feature_info`, e.g. `layer2` for a ResNet, or its index). Frozen
modules also stay in eval mode during training, so their BatchNorm layers normalise with the
pretrained running statistics and do not update them (and dropout / stochastic depth inside
them is off): a frozen stage computes exactly what it computed before fine-tuning.

The backbone (the modules of `forward_steps()`, i.e. `forward_features`) can learn more
slowly than the head: `backbone_lr_scale` multiplies its learning rate (see `optim.py`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from cnnzoo.checkpoint.info import resolve_weights
from cnnzoo.checkpoint.safetensors_file import SAFETENSORS_FORMAT, load_safetensors_model
from cnnzoo.checkpoint.torch_file import FORMAT, CheckpointError, load_checkpoint
from cnnzoo.models import convert
from cnnzoo.models.convert import convert_keys
from cnnzoo.models.registry import create_model
from cnnzoo.train.config import TrainConfig


@dataclass(frozen=True)
class Prepared:
    """The model a run trains and where its weights came from (see `prepare`).

    Attributes:
        model: the network, on the CPU, filled from the init file when one was given.
        model_options: the builder options used (with those the init file needs).
        frozen: the forward steps `freeze` froze (keep them in eval mode while training).
        init: the checkpoints' "init" entry (`init_record` and the frozen steps), or None
            for a fresh initialisation.
        message: the log line saying what was loaded and frozen, or None without init.
    """

    model: nn.Module
    model_options: dict[str, Any]
    frozen: list[str]
    init: dict[str, Any] | None
    message: str | None


def prepare(cfg: TrainConfig, module: nn.Module | None, *, num_classes: int,
            in_chans: int) -> Prepared:
    """Build the model a run trains: `module` as given, or the registered `cfg.model`,
    seeded so every rank starts from the same weights, then filled from `cfg.init` (the file
    decides how its keys read and which builder options it needs) and frozen up to
    `cfg.freeze`.

    Raises:
        ValueError: init with a module, weights that do not fit, no such stage.
    """
    plan = None
    options = dict(cfg.model_options)
    if cfg.init is not None:
        if module is not None:
            raise ValueError("init: needs a registered model name, not a module (load the "
                             "weights into the module yourself)")
        plan = plan_init(cfg.init, cfg.model, num_classes=num_classes, in_chans=in_chans,
                         model_options=cfg.model_options)
        options = plan.model_options
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP broadcasts too)
    model = module if module is not None else create_model(
        cfg.model, num_classes=num_classes, in_chans=in_chans, **options)
    fresh = None if plan is None else load_backbone(model, plan.state_dict,
                                                    what=f"init: {cfg.init}")
    frozen = frozen_steps(model, cfg.freeze) if cfg.freeze is not None else []
    freeze(model, frozen)
    if plan is None:
        return Prepared(model, options, frozen, None, None)
    return Prepared(model, options, frozen, {**init_record(plan, fresh), "frozen": frozen},
                    describe(plan, fresh, frozen))


@dataclass(frozen=True)
class InitWeights:
    """The tensors of a weights file and what the file says about them.

    Attributes:
        path: the file.
        kind: "cnnzoo checkpoint", "cnnzoo safetensors" or "state dict".
        state_dict: the tensors under the file's own key names.
        model_name: the registered model a cnnzoo file records, else None.
        model_options: builder options a cnnzoo file records, else {}.
    """

    path: Path
    kind: str
    state_dict: dict[str, torch.Tensor]
    model_name: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InitPlan:
    """How to build the model so the file's weights fit, and the weights under its key names.

    Attributes:
        weights: the file as read.
        source: the key names the file uses: "cnnzoo", "torchvision" or "timm".
        reference_name: the torchvision / timm model name whose key rules were used, or None.
        model_options: builder options to use (the file's requirements, then the user's).
        state_dict: the tensors under cnnzoo key names.
    """

    weights: InitWeights
    source: str
    reference_name: str | None
    model_options: dict[str, Any]
    state_dict: dict[str, torch.Tensor]


def read_weights(path: str | os.PathLike) -> InitWeights:
    """Read a weights file (see the module docstring for the kinds recognised).

    Raises:
        CheckpointError: missing, unreadable, or not a dict of tensors (one line naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"init: {path}: no such weights file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged zip or pickle, or pickled code: let load_checkpoint word it
        load_checkpoint(path)
        raise
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        ckpt = load_checkpoint(path)  # checks the format version
        weights = resolve_weights(ckpt, "auto")
        if ckpt.get(weights) is None:
            raise CheckpointError(f"init: {path}: checkpoint has no {weights!r} weights")
        return InitWeights(path, "cnnzoo checkpoint", dict(ckpt[weights]), ckpt.get("model_name"),
                           dict(ckpt.get("model_options") or {}))
    return InitWeights(path, "state dict", _tensors(obj, path))


def _read_safetensors(path: Path) -> InitWeights:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises its own SafetensorError and OSError
        raise CheckpointError(f"init: {path}: not a readable safetensors file: "
                              f"{str(err).splitlines()[0][:160]}") from None
    if meta.get("format") == SAFETENSORS_FORMAT:
        model, info = load_safetensors_model(path)
        return InitWeights(path, "cnnzoo safetensors", model.state_dict(), info.model_name,
                           dict(info.model_options))
    return InitWeights(path, "state dict", load_file(str(path)))


def _tensors(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded file: the file itself, or its "state_dict" / "model"."""
    def is_state_dict(d: object) -> bool:
        return isinstance(d, Mapping) and bool(d) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())

    if not is_state_dict(obj) and isinstance(obj, Mapping):
        obj = next((obj[k] for k in ("state_dict", "model") if is_state_dict(obj.get(k))), obj)
    if not is_state_dict(obj):
        raise CheckpointError(f"init: {path}: expected a cnnzoo checkpoint or a state dict "
                              f"(a dict of name -> tensor), got {type(obj).__name__}")
    if all(k.startswith("module.") for k in obj):  # saved from a DistributedDataParallel
        return {k.removeprefix("module."): v for k, v in obj.items()}
    return dict(obj)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file, recorded so a run says exactly which weights it started from."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the classifiers: every Linear layer with `model.num_classes`
    outputs (the last Linear layer when the model does not say its class count)."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    n = getattr(model, "num_classes", None)
    heads = [(nm, m) for nm, m in linears if m.out_features == n] if n else linears[-1:]
    return {f"{nm}.{p}" for nm, m in heads for p, _ in m.named_parameters(recurse=False)}


def fit_problem(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                what: str) -> str | None:
    """Why `state_dict` cannot initialise `model` (one line), or None when it can: same keys
    (the format of `convert.load_strict`), same shapes except the classifiers'."""
    own = model.state_dict()
    name = getattr(model, "name", type(model).__name__)
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        return (f"{what} does not fit {name}: {len(missing)} missing keys (first: "
                f"{missing[:1]}), {len(unexpected)} unexpected keys (first: {unexpected[:1]})")
    heads = classifier_keys(model)
    misfit = [k for k in own if k not in heads and own[k].shape != state_dict[k].shape]
    if misfit:
        k = misfit[0]
        return (f"{what} does not fit {name}: {len(misfit)} tensors of another shape (first: "
                f"{k} has shape {tuple(state_dict[k].shape)}, the model expects "
                f"{tuple(own[k].shape)})")
    return None


def load_backbone(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                  what: str) -> list[str]:
    """Copy `state_dict` into `model`, except classifier tensors of another shape.

    Returns:
        The keys left with the model's fresh initialisation (the resized classifiers).

    Raises:
        ValueError: the weights do not fit (see `fit_problem`).
    """
    problem = fit_problem(model, state_dict, what=what)
    if problem:
        raise ValueError(problem)
    own = model.state_dict()
    resized = [k for k in own if own[k].shape != state_dict[k].shape]
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in resized},
                          strict=False)  # not strict: the resized classifiers stay as built
    return resized


def _candidates(model_name: str, weights: InitWeights) -> list[tuple[str, str | None, dict, list]]:
    """(source, reference name, builder options, key rules) to try, most specific first."""
    if weights.kind != "state dict":
        return [("cnnzoo", None, dict(weights.model_options), [])]
    out = []
    for source, table in (("torchvision", convert.TORCHVISION), ("timm", convert.TIMM)):
        for ref, (zoo_name, options, rules) in table.items():
            if zoo_name == model_name:
                options = dict(options)
                if zoo_name == "googlenet":  # as from_torchvision: aux heads if the file has them
                    options["aux_logits"] = any(k.startswith("aux1.") for k in weights.state_dict)
                out.append((source, ref, options, rules))
    return out + [("cnnzoo", None, {}, [])]


def plan_init(path: str | os.PathLike, model_name: str, *, num_classes: int, in_chans: int,
              model_options: Mapping[str, Any]) -> InitPlan:
    """Read `path` and find the key names under which it fits `model_name`.

    Each way of reading the keys is checked against the model built on the meta device (no
    memory, no random numbers drawn); the user's `model_options` override the file's.

    Raises:
        ValueError: no reading fits; the message is the closest one's (fewest mismatches).
    """
    weights = read_weights(path)
    problems = []
    for source, ref, options, rules in _candidates(model_name, weights):
        options = {**options, **model_options}
        state_dict = convert_keys(weights.state_dict, rules)
        with torch.device("meta"):
            model = create_model(model_name, num_classes=num_classes, in_chans=in_chans,
                                 **options)
        recorded = f" of {weights.model_name}" if weights.model_name else ""
        keys = f", read with {source} key names" if weights.kind == "state dict" else ""
        problem = fit_problem(model, state_dict,
                              what=f"init: {weights.path} ({weights.kind}{recorded}{keys})")
        if problem is None:
            return InitPlan(weights, source, ref, options, state_dict)
        own = set(model.state_dict())
        problems.append((len(own ^ set(state_dict)), problem))
    raise ValueError(min(problems, key=lambda p: p[0])[1])


def init_record(plan: InitPlan, reinitialized: Sequence[str]) -> dict[str, Any]:
    """What a checkpoint's "init" entry says about where the weights came from."""
    return {"path": str(plan.weights.path), "sha256": file_digest(plan.weights.path),
            "kind": plan.weights.kind, "source": plan.source,
            "reference_name": plan.reference_name, "model_name": plan.weights.model_name,
            "loaded": len(plan.state_dict) - len(reinitialized),
            "reinitialized": list(reinitialized)}


def frozen_steps(model: nn.Module, stage: str) -> list[str]:
    """The forward steps `--freeze stage` freezes: the stem and stages up to `stage`.

    Args:
        model: a zoo model (it names its stages in `feature_info`).
        stage: a module name of `model.feature_info` (`layer2`) or its index (`2`, `-1`).

    Raises:
        ValueError: not a zoo model, or no such stage (the message lists them).
    """
    if not hasattr(model, "forward_steps"):
        raise ValueError(f"freeze: {type(model).__name__} is not a zoo model; its stages are "
                         "unknown")
    names = [i.module for i in model.feature_info]
    stages = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
    if stage in names:
        index = names.index(stage)
    elif stage.lstrip("-").isdigit() and -len(names) <= int(stage) < len(names):
        index = int(stage) % len(names)
    else:
        raise ValueError(f"freeze: {model.name} has no stage {stage!r}; expected a stage name "
                         f"or index ({stages})")
    steps = model.forward_steps()
    return steps[:steps.index(names[index]) + 1]


def freeze(model: nn.Module, steps: Sequence[str]) -> list[str]:
    """requires_grad=False on every parameter of the modules `steps`; returns their names."""
    frozen = []
    for step in steps:
        for name, param in model.get_submodule(step).named_parameters():
            param.requires_grad_(False)
            frozen.append(f"{step}.{name}")
    return frozen


def keep_frozen_in_eval(model: nn.Module, steps: Sequence[str]) -> None:
    """Put the frozen modules back in eval mode (call after `model.train()`): their BatchNorm
    layers keep normalising with, and not updating, the pretrained running statistics."""
    for step in steps:
        model.get_submodule(step).eval()


def backbone_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters of `forward_features` (the modules of `forward_steps()`)."""
    if not hasattr(model, "forward_steps"):
        raise ValueError(f"backbone_lr_scale: {type(model).__name__} is not a zoo model; its "
                         "backbone is unknown")
    return {id(p) for step in model.forward_steps()
            for p in model.get_submodule(step).parameters()}


def describe(plan: InitPlan, reinitialized: Sequence[str], frozen: Sequence[str]) -> str:
    """One line for the log: what was loaded, re-initialised and frozen."""
    how = f" ({plan.source} keys)" if plan.weights.kind == "state dict" else ""
    kept = len(plan.state_dict) - len(reinitialized)
    fresh = ", ".join(reinitialized) or "nothing (the classifier has the same size)"
    line = (f"init: {plan.weights.path} ({plan.weights.kind}{how}): {kept} tensors loaded, "
            f"re-initialised {fresh}")
    if frozen:
        line += f"; frozen {frozen[0]}..{frozen[-1]} (BatchNorm in eval mode)"
    return line
