"""Theoretical receptive fields, layer by layer, for any network: no per-family code.

The arithmetic is that of Araujo, Norris, Sim 2019, "Computing Receptive Fields of
Convolutional Neural Networks", Distill (https://distill.pub/2019/computing-receptive-fields/),
and Dumoulin & Visin 2016, arXiv:1603.07285. Per spatial axis, a layer of kernel k, stride s,
padding p and dilation d maps the field of its input (size r, jump j, start c) to

    r' = r + d (k - 1) j        j' = j s        c' = c + (d (k - 1) / 2 - p) j

in input-image pixels, where pixel i has its centre at coordinate i, `jump` is the distance
between neighbouring units (the cumulative stride) and `start` is the centre of the first
unit's field (unit u of the map sees [c + u j - (r - 1) / 2, c + u j + (r - 1) / 2]). The field
is the theoretical one: it may reach into the zero padding (ResNet-50's 427 px at 224 x 224),
and with dilation or stride > kernel it has holes.

How: a meta-device copy of the model runs one eval-mode forward under a `TorchFunctionMode`
that keeps a field beside every tensor computed from the input and applies the rule of each
operator it sees (convolution, pooling, padding, slicing, resizing, the elementwise rest);
forward hooks attribute the field of each module's output to that module. Rules, per axis:

- Operands of one output (a residual addition, a concatenation, an SE rescaling, ...): the
  field is the union of the operands' windows, i.e. the largest field when they are centred
  alike (every cnnzoo block is aligned). Operands whose jumps differ give the largest union
  over the map's first and last units and the larger jump, flagged `exact=False` (an upper
  bound on the size; the window's position is then approximate).
- Global: global pooling (adaptive pooling to 1 x 1, a mean over H and W), flatten, linear and
  matrix products mix every position: the field is the part of the image the pooled map's
  units cover (normally all of it) and there is no jump. A global operand broadcast onto a map
  (the SE gate) leaves the map's window but sets `global_context`: every unit then also depends
  on the whole image. Group/instance/layer norm and train-mode batch norm set it too.
- Adaptive pooling to a size that does not divide the input: the largest window and the mean
  stride (in / out); resizing (`interpolate`): kernel 1 (nearest), 2 (bilinear), 4 (bicubic)
  at stride in / out. Both are flagged `exact=False`.
- Deformable convolution (`cnnzoo.layers.DeformConv2d`, and `F.grid_sample` anywhere else)
  samples where its offsets point: a `DeformConv2d` reports its nominal grid (the field with
  zero offsets) and everything computed from it is flagged `input_dependent`; a bare
  `grid_sample` makes the result global and input-dependent.
- Operators that move positions in ways the rules do not model (transposed and 1-D/3-D convs,
  fold/unfold, pixel shuffle, flips, rolls) raise a ValueError naming the operator. Any other
  operator whose output keeps the (H, W) of its operands is taken to be pointwise in space;
  one that changes it is taken to be global (an upper bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakTensorKeyDictionary

from cnnzoo.layers import DeformConv2d
from cnnzoo.profile.meta import MetaShortcuts, check_input_shape, meta_model
from cnnzoo.profile.summary import pair_text

# Re-exported: `summary_columns` lived here before it moved beside the table it fills.
from cnnzoo.profile.summary import summary_columns as summary_columns


@dataclass(frozen=True)
class FieldRow:
    """The field of one module's output (one row per call, in the order calls finish).

    Attributes:
        path: dotted module path ("" is the model itself).
        type: class name of the module.
        call: 0 for the module's first call, 1 for the second (a shared ReLU), ...
        output_shape: shape of the module's (first tracked) output tensor.
        rf: field size in input pixels, (height, width); for a global row, the extent of the
            image it sees.
        jump: distance in input pixels between neighbouring output units, (h, w); None when
            global.
        start: centre of the first unit's field in input pixel coordinates (pixel i has its
            centre at i), (h, w); for a global row, the centre of the extent.
        is_global: every output value mixes all positions (global pooling, flatten, linear).
        global_context: a local window, but every unit also depends on the whole image
            through a global branch (the squeeze-and-excitation gate).
        input_dependent: a deformable convolution is upstream: `rf` is its nominal grid, the
            true field moves with the offsets it predicts from the input.
        exact: False where the rules give an upper bound (misaligned branches, adaptive
            pooling or resizing by a non-integer factor).
    """

    path: str
    type: str
    call: int
    output_shape: tuple[int, ...]
    rf: tuple[int | float, int | float]
    jump: tuple[int | float, int | float] | None
    start: tuple[float, float]
    is_global: bool
    global_context: bool
    input_dependent: bool
    exact: bool

    @property
    def depth(self) -> int:
        return 0 if not self.path else self.path.count(".") + 1

    @property
    def notes(self) -> str:
        """The flags in words: "global", "global context", "input-dependent", "upper bound"."""
        return ", ".join(n for n, on in (
            ("global", self.is_global), ("global context", self.global_context),
            ("input-dependent", self.input_dependent), ("upper bound", not self.exact)) if on)


@dataclass(frozen=True)
class ReceptiveFieldReport:
    """`receptive_field`'s answer: one `FieldRow` per module call, and the features' field.

    Attributes:
        model: model name (or class name).
        input_shape: (N, C, H, W) of the forward pass.
        rows: one row per module call, children before their parents.
        features: the field of the final feature map: the output of `forward_features` for a
            zoo model, else of the last module whose output is not global; None if neither.
    """

    model: str
    input_shape: tuple[int, int, int, int]
    rows: tuple[FieldRow, ...]
    features: FieldRow | None

    def by_path(self) -> dict[str, FieldRow]:
        """Each module's row for its last call (a block's shared ReLU: after the addition)."""
        return {r.path: r for r in self.rows}

    def table(self, depth: int = 3) -> str:
        """A text table of the rows down to `depth`, then the features' field."""
        head = (f"{'Layer (type)':<46}{'Output shape':>18}{'RF (px)':>10}{'Jump':>7}"
                f"{'Start':>8}  Notes")
        lines = [f"{self.model}  input {'x'.join(map(str, self.input_shape))}  receptive "
                 "fields in input pixels (H x W where they differ)", head, "-" * 100]
        for r in self.rows:
            if r.depth <= depth:
                label = f"{'  ' * max(r.depth - 1, 0)}{r.path or '(model)'} ({r.type})"
                lines.append(_line(label, r))
        if self.features is not None:
            lines += ["-" * 100, _line("final feature map", self.features)]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def receptive_field(
    model_or_name: nn.Module | str,
    input_shape: Sequence[int] = (3, 224, 224),
) -> ReceptiveFieldReport:
    """Receptive field size, jump and start of every module's output, in forward order.

    The model passed in is never modified: a meta-device copy runs one eval-mode forward
    (no computation, no memory). See the module docstring for the rules.

    Args:
        model_or_name: a module, or a registered model name (built with
            `in_chans = input_shape[-3]`).
        input_shape: (C, H, W) or (N, C, H, W).

    Returns:
        A `ReceptiveFieldReport`; `str(report)` is the table.

    Raises:
        ValueError: unknown model name, a bad shape, an input the model cannot take, or an
            operator whose spatial mapping the rules do not model.
    """
    shape = check_input_shape(input_shape)
    shape = (1, *shape[1:])  # the field does not depend on the batch
    name, model = meta_model(model_or_name, shape[1], caller="receptive_field")
    model.eval()
    tracker = _FieldTracker(image=shape[2:])
    x = torch.empty(shape, device="meta")
    tracker.fields[x] = _Field.pixel(shape[2:])
    handles = []
    for path, module in model.named_modules():
        if isinstance(module, DeformConv2d):
            handles.append(module.register_forward_pre_hook(tracker.pre_hook))
        handles.append(module.register_forward_hook(tracker.hook(path)))
    features: list[torch.Tensor] = []
    if callable(getattr(model, "forward_features", None)):
        inner = model.forward_features

        def forward_features(t: torch.Tensor) -> torch.Tensor:
            features.append(inner(t))
            return features[-1]

        model.forward_features = forward_features  # on the throw-away copy only
    try:
        with torch.no_grad(), MetaShortcuts(), tracker:
            model(x)
    except _Unmodelled as err:
        raise ValueError(f"receptive_field: {name}: {err}") from None
    except ValueError:
        raise  # zoo models already say which model and what they expected
    except (RuntimeError, IndexError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{name}: cannot take an input of shape "
                         f"{'x'.join(map(str, shape))}: {first}") from err
    finally:
        for h in handles:
            h.remove()
    rows = tuple(tracker.rows)
    if features and tracker.fields.get(features[-1]) is not None:
        feature_row = _row("forward_features", type(model).__name__, 0, features[-1],
                           tracker.fields[features[-1]])
    else:
        feature_row = next((r for r in reversed(rows) if not r.is_global), None)
    return ReceptiveFieldReport(model=name, input_shape=shape, rows=rows, features=feature_row)


def layer_columns(report: ReceptiveFieldReport) -> dict[str, dict]:
    """Per module path (its last call), the receptive-field columns of `cnnzoo summary`:
    {"rf": (h, w), "jump": (h, w) or None when global, "rf_notes": "global, ..."}, ready for
    `dataclasses.replace` on a profile `LayerRow`; modules never called are absent."""
    return {path: {"rf": r.rf, "jump": r.jump, "rf_notes": r.notes}
            for path, r in report.by_path().items()}


# --- fields -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Axis:
    rf: Fraction
    jump: Fraction | None  # None: global
    start: Fraction

    def window(self, k: int, stride: Fraction | int, pad: Fraction | int, dil: int) -> _Axis:
        if self.jump is None:
            return self
        span = dil * (k - 1)
        return _Axis(self.rf + span * self.jump, self.jump * stride,
                     self.start + (Fraction(span, 2) - pad) * self.jump)

    def bounds(self, unit: int) -> tuple[Fraction, Fraction]:
        centre = self.start + unit * (self.jump or 0)
        return centre - (self.rf - 1) / 2, centre + (self.rf - 1) / 2


@dataclass(frozen=True)
class _Field:
    size: tuple[int, int] | None  # (H, W) of the map it belongs to; None: not spatial
    axes: tuple[_Axis, _Axis]
    is_global: bool = False
    global_context: bool = False
    input_dependent: bool = False
    exact: bool = True

    @staticmethod
    def pixel(size: Sequence[int]) -> _Field:
        one = _Axis(Fraction(1), Fraction(1), Fraction(0))
        return _Field(tuple(size), (one, one))


class _Unmodelled(Exception):
    pass


_UNMODELLED = {
    "conv1d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "fold",
    "unfold", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "roll", "flip", "fliplr",
    "flipud", "rot90", "max_pool1d", "max_pool3d", "avg_pool1d", "avg_pool3d", "lp_pool1d",
    "lp_pool3d", "fractional_max_pool2d", "fractional_max_pool3d", "max_unpool2d",
}
_POOLS = {"max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "lp_pool2d"}
_ADAPTIVE = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"}
_MIXING = {"linear", "bilinear", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm",
           "baddbmm", "einsum", "tensordot", "scaled_dot_product_attention"}
_CONTEXT_NORMS = {"group_norm", "instance_norm", "layer_norm"}
# Outputs that take only the shape, dtype or device of a tensor, not its values.
_SHAPE_ONLY = {"new_tensor", "new_empty", "new_zeros", "new_ones", "new_full", "empty_like",
               "zeros_like", "ones_like", "full_like", "rand_like", "randn_like",
               "randint_like"}


class _FieldTracker(TorchFunctionMode):
    """Keeps a `_Field` beside every tensor computed from the input, and the module rows."""

    def __init__(self, image: Sequence[int]):
        super().__init__()
        self.image = tuple(image)
        self.fields = WeakTensorKeyDictionary()
        self.rows: list[FieldRow] = []
        self.calls: dict[str, int] = {}
        self.deform_inputs: list[_Field | None] = []

    # Modules: rows, and the nominal grid of a DeformConv2d (its insides use grid_sample).
    def pre_hook(self, module: nn.Module, args: tuple) -> None:
        if isinstance(module, DeformConv2d):
            self.deform_inputs.append(self.fields.get(args[0]) if args else None)

    def hook(self, path: str):
        def record(module: nn.Module, args: tuple, output) -> None:
            if isinstance(module, DeformConv2d):
                field = self.deform_inputs.pop()
                if field is not None and isinstance(output, torch.Tensor):
                    nominal = self._conv(field, module.kernel_size, module.stride,
                                         module.padding, module.dilation, _hw(output))
                    self.fields[output] = replace(nominal, input_dependent=True)
            out = next((t for t in tree_leaves(output)
                        if isinstance(t, torch.Tensor) and t in self.fields), None)
            if out is None:
                return
            call = self.calls.get(path, 0)
            self.calls[path] = call + 1
            self.rows.append(_row(path, type(module).__name__, call, out, self.fields[out]))
        return record

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        tracked = [(t, self.fields[t]) for t in tree_leaves((args, kwargs))
                   if isinstance(t, torch.Tensor) and t in self.fields]
        if not tracked or name in _SHAPE_ONLY:
            return out
        if name == "__setitem__":  # x[...] = y writes y's values into x
            self.fields[args[0]] = self._combine([f for _, f in tracked], _hw(args[0]))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.fields[leaf] = self._rule(name, args, kwargs, tracked, leaf)
        return out

    def _rule(self, name: str, args: tuple, kwargs: dict, tracked: list, out: torch.Tensor):
        fields = [f for _, f in tracked]
        hw = _hw(out)
        first = tracked[0][1] if tracked[0][0] is _arg(args, kwargs, 0, "input") else None
        if name in _UNMODELLED and any(not f.is_global for f in fields):
            raise _Unmodelled(f"{name} moves positions in a way the receptive-field rules do "
                              "not model (see cnnzoo.profile.receptive_field)")
        if name == "grid_sample":
            return replace(self._global(fields, hw), input_dependent=True)
        if name in _MIXING:
            return self._global(fields, hw)
        if first is not None and name in ("conv2d", "deform_conv2d"):
            at = 2 if name == "deform_conv2d" else 1  # deform_conv2d(input, offset, weight..
            w = _arg(args, kwargs, at, "weight")
            geometry = [_arg(args, kwargs, at + i, n, d) for i, n, d in
                        ((2, "stride", 1), (3, "padding", 0), (4, "dilation", 1))]
            field = self._conv(first, tuple(w.shape[-2:]), *geometry, hw)
            rest = self._combine(fields[1:], hw) if len(fields) > 1 else None
            field = self._combine([field, rest] if rest else [field], hw)
            return replace(field, input_dependent=field.input_dependent or
                           name == "deform_conv2d")
        if first is not None and name in _POOLS:
            lp = name == "lp_pool2d"
            k = _arg(args, kwargs, 1 + lp, "kernel_size")
            stride = _arg(args, kwargs, 2 + lp, "stride", None) or k
            pad = 0 if lp else _arg(args, kwargs, 3, "padding", 0)
            dil = _arg(args, kwargs, 4, "dilation", 1) if name.startswith("max") else 1
            return self._combine([self._conv(first, k, stride, pad, dil, hw), *fields[1:]], hw)
        if first is not None and name in _ADAPTIVE | {"interpolate", "upsample"}:
            return self._resample(name, first, args, kwargs, hw)
        if first is not None and name == "pad":
            return self._pad(first, _arg(args, kwargs, 1, "pad"), hw)
        if first is not None and name == "__getitem__":
            return self._slice(first, args[1], tuple(args[0].shape), hw)
        field = self._combine(fields, hw)
        if (name in _CONTEXT_NORMS or (name == "batch_norm"
                                       and _arg(args, kwargs, 5, "training", False))):
            field = replace(field, global_context=True)
        return field

    # --- the rules -------------------------------------------------------------------------

    def _conv(self, f: _Field, kernel, stride, padding, dilation, hw) -> _Field:
        if f.is_global or hw is None:
            return replace(f, size=hw) if f.is_global else self._global([f], hw)
        k, s, d = _pair(kernel), _pair(stride), _pair(dilation)
        if isinstance(padding, str):  # "valid" or "same" (stride 1: pad d (k - 1) / 2 first)
            padding = [0 if padding == "valid" else (d[i] * (k[i] - 1)) // 2 for i in (0, 1)]
        p = _pair(padding)
        axes = tuple(f.axes[i].window(k[i], s[i], p[i], d[i]) for i in (0, 1))
        return replace(f, size=hw, axes=axes)

    def _resample(self, name: str, f: _Field, args, kwargs, hw) -> _Field:
        if f.is_global or hw is None:
            return replace(f, size=hw) if f.is_global else self._global([f], hw)
        if name in _ADAPTIVE and hw == (1, 1) and f.size != (1, 1):
            return self._global([f], hw)
        mode = "area" if name in _ADAPTIVE else _arg(args, kwargs, 3, "mode", "nearest")
        axes, exact = [], f.exact
        for a, n, m in zip(f.axes, f.size, hw, strict=True):
            step = Fraction(n, m)
            if mode == "area":  # windows [floor(i n / m), ceil((i + 1) n / m))
                k = max(math.ceil((i + 1) * step) - math.floor(i * step) for i in range(m))
                offset = Fraction(math.ceil(step) - 1, 2)
                exact = exact and n % m == 0
            else:
                k = {"bilinear": 2, "bicubic": 4}.get(mode, 1)
                # Unit 0 reads input coordinate x0 (align_corners=False; nearest: floor(0)).
                x0 = (max(Fraction(0), step / 2 - Fraction(1, 2)) if k > 1
                      else Fraction(math.floor(step / 2)) if mode == "nearest-exact"
                      else Fraction(0))
                offset = math.floor(x0) - (k == 4) + Fraction(k - 1, 2)
                exact = exact and k == 1 and step.denominator == 1
            axes.append(_Axis(a.rf + (k - 1) * a.jump, a.jump * step, a.start + offset * a.jump))
        return replace(f, size=hw, axes=tuple(axes), exact=exact)

    def _pad(self, f: _Field, pad: Sequence[int], hw) -> _Field:
        if f.is_global or hw is None:
            return replace(f, size=hw) if f.is_global else self._global([f], hw)
        pad = list(pad) + [0] * (4 - min(len(pad), 4))
        before = (pad[2], pad[0])  # F.pad lists the last dim first: (left, right, top, bottom)
        axes = tuple(replace(a, start=a.start - b * a.jump) for a, b in zip(f.axes, before,
                                                                              strict=True))
        return replace(f, size=hw, axes=axes)

    def _slice(self, f: _Field, index, in_shape: tuple[int, ...], hw) -> _Field:
        index = index if isinstance(index, tuple) else (index,)
        plain = all(i is Ellipsis or i is None or isinstance(i, (int, slice)) for i in index)
        if f.is_global or hw is None or not plain or len(in_shape) < 3:
            return self._combine([f], hw)
        consumed = sum(isinstance(i, (int, slice)) for i in index)
        per_dim: list = []
        for i in index:
            if i is Ellipsis:
                per_dim += [slice(None)] * (len(in_shape) - consumed)
            elif i is not None:
                per_dim.append(i)
        per_dim += [slice(None)] * (len(in_shape) - len(per_dim))
        spatial = per_dim[-2:]
        if not all(isinstance(i, slice) for i in spatial):
            return self._combine([f], hw)
        axes, sizes = [], []
        for a, sl, n in zip(f.axes, spatial, in_shape[-2:], strict=True):
            lo, hi, step = sl.indices(n)
            sizes.append(len(range(lo, hi, step)))
            axes.append(_Axis(a.rf, a.jump * step, a.start + lo * a.jump))
        if tuple(sizes) != hw:  # None inserted after the spatial dims, ...
            return self._combine([f], hw)
        return replace(f, size=hw, axes=tuple(axes))

    def _combine(self, fields: list[_Field], hw) -> _Field:
        """Union of the operands' windows that match the output's (H, W); others are context."""
        matching = [f for f in fields if not f.is_global and f.size == hw]
        if hw is None or not matching:
            return self._global(fields, hw)
        axes, exact = [], all(f.exact for f in matching)
        for i in (0, 1):
            a = [f.axes[i] for f in matching]
            jumps = {x.jump for x in a}
            extents = []
            for unit in (0, hw[i] - 1) if len(jumps) > 1 else (0,):
                lo = min(x.bounds(unit)[0] for x in a)
                hi = max(x.bounds(unit)[1] for x in a)
                extents.append((hi - lo + 1, (lo + hi) / 2))
            exact = exact and len(jumps) == 1
            axes.append(_Axis(max(e[0] for e in extents), max(jumps), extents[0][1]))
        return _Field(hw, tuple(axes),
                      global_context=len(matching) < len(fields)
                      or any(f.global_context for f in fields),
                      input_dependent=any(f.input_dependent for f in fields), exact=exact)

    def _global(self, fields: list[_Field], hw) -> _Field:
        """Every position mixed: the field is the part of the image any unit covers."""
        axes = []
        for i in (0, 1):
            lo = min(f.axes[i].bounds(0)[0] for f in fields)
            hi = max(f.axes[i].bounds((f.size[i] - 1) if not f.is_global else 0)[1]
                     for f in fields)
            lo, hi = max(Fraction(math.floor(lo)), Fraction(0)), min(
                Fraction(math.ceil(hi)), Fraction(self.image[i] - 1))
            axes.append(_Axis(hi - lo + 1, None, (lo + hi) / 2))
        return _Field(hw, tuple(axes), is_global=True,
                      input_dependent=any(f.input_dependent for f in fields),
                      exact=all(f.exact for f in fields))


# --- helpers ------------------------------------------------------------------------------


def _hw(t: torch.Tensor) -> tuple[int, int] | None:
    return tuple(t.shape[-2:]) if t.dim() >= 3 else None


def _arg(args: tuple, kwargs: dict, i: int, name: str, default=None):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (int, Fraction)):
        return (v, v)
    v = tuple(v)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _num(v: Fraction) -> int | float:
    return int(v) if v.denominator == 1 else float(v)


def _row(path: str, type_: str, call: int, out: torch.Tensor, f: _Field) -> FieldRow:
    return FieldRow(
        path=path, type=type_, call=call, output_shape=tuple(out.shape),
        rf=(_num(f.axes[0].rf), _num(f.axes[1].rf)),
        jump=None if f.is_global else (_num(f.axes[0].jump), _num(f.axes[1].jump)),
        start=(float(f.axes[0].start), float(f.axes[1].start)),
        is_global=f.is_global, global_context=f.global_context,
        input_dependent=f.input_dependent, exact=f.exact,
    )


def _line(label: str, r: FieldRow) -> str:
    shape = "x".join(map(str, r.output_shape))
    return (f"{label:<46.46}{shape:>18}{pair_text(r.rf):>10}{pair_text(r.jump):>7}"
            f"{pair_text(r.start):>8}  {r.notes}")


def feature_receptive_fields(model: nn.Module,
                             input_shape: Sequence[int] | None = None) -> list[FieldRow]:
    """The field of each backbone stage of a zoo model, from this one engine.

    One `FieldRow` per entry of `model.feature_info`, in its order: the row of the stage's
    module (`rf` and `jump` per axis, in input pixels). At the model's native input size a
    stage's jump equals its declared `reduction`. The model is not modified.

    Args:
        model: a zoo model (it declares `feature_info`), on any device.
        input_shape: (C, H, W) or (N, C, H, W); default the model's `input_size`.
    """
    shape = tuple(input_shape) if input_shape is not None else tuple(model.input_size)
    rows = receptive_field(model, shape).by_path()
    return [rows[stage.module] for stage in model.feature_info]
