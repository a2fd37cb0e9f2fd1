"""Where a GoogLeNet's gradient comes from: its twin without auxiliary heads, the main and
auxiliary losses' gradients taken apart at the same weights, hooks that record each watched
layer's gradient norm at every step of a `cnnzoo.train` run, and the twins trained with them
(the inception experiment's claims 3 and 4).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.experiments.base import Context
from cnnzoo.experiments.common import Splits, accuracy, fit, mean_std, normalized_batch, pct
from cnnzoo.models.googlenet import GoogLeNet, paper_aux_sides, slim_googlenet
from cnnzoo.profile import profile

LOWER = ("conv1", "conv2", "inception3a")  # the lower layers, below both auxiliary heads
WATCHED = (*LOWER, "inception4a", "inception5b")  # 5b sits above both heads: the control


def without_aux(model: GoogLeNet) -> GoogLeNet:
    """A copy with the same body weights and no auxiliary heads."""
    twin = copy.deepcopy(model)
    twin.aux1 = twin.aux2 = None
    return twin


def gradient_split(model: GoogLeNet, x: torch.Tensor, y: torch.Tensor,
                   layers: Iterable[str] = WATCHED) -> dict[str, dict[str, float]]:
    """At the model's current weights, one forward in training mode (one dropout draw) and
    the gradient of each layer's parameters from the main loss and from the weighted
    auxiliary losses separately: their norms, their ratio and their cosine."""
    model.train()
    out = model(x)
    main = F.cross_entropy(out.logits, y)
    aux = model.aux_weight * (F.cross_entropy(out.aux_logits1, y)
                              + F.cross_entropy(out.aux_logits2, y))
    layers = list(layers)
    params = {name: list(getattr(model, name).parameters()) for name in layers}
    flat = [q for name in layers for q in params[name]]
    g_main = torch.autograd.grad(main, flat, retain_graph=True)
    g_aux = torch.autograd.grad(aux, flat, allow_unused=True)  # None above both heads
    g_aux = [torch.zeros_like(q) if g is None else g for q, g in zip(flat, g_aux, strict=True)]
    result, start = {}, 0
    for name in layers:
        end = start + len(params[name])
        vec_main = torch.cat([g.flatten() for g in g_main[start:end]]).double()
        vec_aux = torch.cat([g.flatten() for g in g_aux[start:end]]).double()
        n_main, n_aux = float(vec_main.norm()), float(vec_aux.norm())
        cosine = float(F.cosine_similarity(vec_main, vec_aux, dim=0)) if n_aux > 0 else 0.0
        result[name] = {"main": n_main, "aux": n_aux, "ratio": n_aux / n_main,
                        "cosine": cosine}
        start = end
    return result


class GradientRecorder:
    """Hooks on a model trained by `cnnzoo.train`: the gradient norm of each watched layer
    at every optimizer step (each parameter's gradient arrives once per backward), and a copy
    of the weights at the chosen steps (taken during that step's backward, so before the
    optimizer changes them: the weights that step's gradient was computed at)."""

    def __init__(self, model: nn.Module, layers: Iterable[str] = WATCHED,
                 snapshot_steps: Iterable[int] = ()):
        self.model = model
        self.sq: dict[str, list[list[float]]] = {}
        self.steps = 0
        self.snapshot_steps = set(snapshot_steps)
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        first = next(model.parameters())
        self.handles = [first.register_hook(self._count)]
        for name in layers:
            params = list(getattr(model, name).parameters())
            self.sq[name] = [[] for _ in params]
            for i, p in enumerate(params):
                self.handles.append(p.register_hook(partial(self._record, name, i)))

    def _count(self, grad: torch.Tensor) -> None:
        self.steps += 1
        if self.steps in self.snapshot_steps:
            self.snapshots[self.steps] = {k: v.detach().clone()
                                          for k, v in self.model.state_dict().items()}

    def _record(self, name: str, index: int, grad: torch.Tensor) -> None:
        self.sq[name][index].append(float((grad.double() ** 2).sum()))

    def norms(self) -> dict[str, list[float]]:
        """Removes the hooks; per layer, the gradient norm at each recorded step."""
        for h in self.handles:
            h.remove()
        return {name: [sum(step) ** 0.5 for step in zip(*per_param, strict=True)]
                for name, per_param in self.sq.items()}


def train_twins(ctx: Context, splits: Splits) -> dict[str, Any]:
    """A slim GoogLeNet and its twin without heads (the same initial weights) trained per seed
    with a `GradientRecorder`; the run with heads is probed by `gradient_split` at its
    snapshots, on one fixed training batch (stratified and seeded: `normalized_batch`).

    Returns:
        "aux" / "no_aux" -> params and per-seed runs (test_acc, val_acc, train_loss,
        grad_norms of the first early_step steps, train_s; "aux" also split: step -> layer
        -> `gradient_split`), and early_step, last_step.
    """
    p = ctx.params
    side = splits.image_size
    lo, hi = paper_aux_sides(small_input=True)
    if not (lo <= min(side) and max(side) <= hi):
        raise ValueError(f"inception: the GoogLeNet's auxiliary heads need images of {lo} to "
                         f"{hi} px, got {side[0]}x{side[1]} from {ctx.data}")
    x, y = normalized_batch(splits.train, min(256, len(splits.train)), seed=ctx.seed)
    per_epoch = len(splits.train) // p["batch_size"]  # the trainer drops the last partial batch
    total = per_epoch * p["googlenet_epochs"]
    early = min(p["grad_steps"], total)
    # Weights at step s = after s - 1 updates: the start, the end of the first steps, each
    # epoch's start; the trained model is step total + 1.
    probes = {1, early, *(e * per_epoch + 1 for e in range(1, p["googlenet_epochs"]))}
    result: dict[str, Any] = {"aux": {"runs": []}, "no_aux": {"runs": []},
                              "early_step": early, "last_step": total + 1}
    for i in range(p["seeds"]):
        seed = ctx.seed + i
        torch.manual_seed(seed)
        with_heads = slim_googlenet(width_div=p["googlenet_width_div"], in_chans=splits.in_chans,
                                    num_classes=splits.num_classes)
        no_heads = without_aux(with_heads)  # the same initial body weights
        for key, model in (("aux", with_heads), ("no_aux", no_heads)):
            recorder = GradientRecorder(model, snapshot_steps=probes if key == "aux" else ())
            # AdamW: chosen on validation accuracy over SGD (lr 0.05/0.1), which left these
            # un-normalised nets near chance for epochs at this budget.
            model, rows = fit(ctx, model, splits, epochs=p["googlenet_epochs"], seed=seed,
                              batch_size=p["batch_size"], optimizer="adamw",
                              lr=p["googlenet_lr"], weight_decay=0.05, schedule="cosine",
                              channels_last=True)
            norms = recorder.norms()
            run = {"test_acc": accuracy(model, splits.test),
                   "val_acc": [r["val_acc"] for r in rows],
                   "train_loss": [r["train_loss"] for r in rows],
                   "grad_norms": {k: v[:early] for k, v in norms.items()},
                   "train_s": sum(r["epoch_time_s"] for r in rows)}
            if key == "aux":
                states = {**recorder.snapshots, total + 1: model.state_dict()}
                run["split"] = {}
                for step, state in sorted(states.items()):
                    probe = copy.deepcopy(model)
                    probe.load_state_dict(state)
                    torch.manual_seed(seed)  # the same dropout draw at every probe
                    run["split"][step] = gradient_split(probe, x, y)
            result[key]["runs"].append(run)
            ctx.log(f"googlenet {key} seed {seed}: test {pct(run['test_acc'])}")
        result["aux"]["params"] = profile(with_heads, (1, splits.in_chans, *side)).params
        result["no_aux"]["params"] = profile(no_heads, (1, splits.in_chans, *side)).params
    return result


def _mean(values: Iterable[float]) -> float:
    return mean_std(list(values))[0]


def mean_steps(runs: list[dict[str, Any]], layer: str) -> list[float]:
    """The per-step gradient norm of `layer`, averaged over the seeds' runs."""
    return [_mean(s) for s in zip(*(r["grad_norms"][layer] for r in runs), strict=True)]


def share(runs: list[dict[str, Any]], step: int, layer: str) -> float:
    """||g_aux|| / ||g_main|| of `layer` at the weights of `step`, mean over seeds."""
    return _mean(r["split"][step][layer]["ratio"] for r in runs)
