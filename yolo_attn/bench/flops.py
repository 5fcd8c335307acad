"""FLOPs at the real input size, counted per aten op, with a per-module breakdown and a thop cross-check.

Why not Ultralytics' ``get_flops``: it profiles a one-stride-tall proxy image and extrapolates by area, which is wrong
for layers whose cost is not proportional to H*W (Coordinate Attention's strip convs come out several times too high),
and it returns 0.0 when profiling fails. thop/fvcore only see ``nn.Module`` calls (plus matmul/einsum in
ultralytics-thop), so a layer that calls ``F.conv2d`` with its own weights, or does its work with ``*`` and
``sigmoid``, is under-counted.

:class:`OpCounter` is a ``TorchDispatchMode``: it sees every aten op a forward pass runs, whichever Python code called
it, and attributes the work to the modules on the call stack (forward pre/post hooks).

Convention (also stored in every JSON report as ``FLOPS_CONVENTION``):

* **MACs** -- multiply-accumulates of convolutions (dense, grouped, depthwise, transposed) and matrix products
  (mm, bmm, addmm, baddbmm, dot, mv, matmul/einsum/linear through their decompositions, scaled-dot-product
  attention). Bias additions are *not* MACs. **GFLOPs = 2 x MACs / 1e9** (Ultralytics' convention: yolov8s fused at
  640 = 28.6).
* **Elementwise ops**, reported separately: pointwise ops (add, mul, sigmoid, SiLU, h-swish, ...) and bias adds cost
  1 per output element; reductions (sum, mean, amax, ...) 1 per input element, variance/std 2; softmax 3 per element
  (exp, sum, divide); batch norm in inference 2 per element (scale, shift); group/layer norm 2 (statistics) + 1
  (normalise) + 1 (affine, when present); pooling 1 per window element read; adaptive pooling 1 per input element;
  resampling (upsample/interpolate, any mode) 1 per output element. Data movement (views, cat, copies, indexing,
  padding, dtype casts, tensor creation) costs 0. Ops with no rule are listed in ``uncounted_ops``, never silently
  treated as free.
* Counts are per forward pass of the given input (batch 1 by default, so "per image"), in eval mode.
* **Two columns.** The headline counts (``macs``, ``gflops``, ``elementwise_ops``) count every plugin layer as its
  paper's *official formulation* computes it, the convention published tables use; ``executed_*`` count what the
  model actually runs. A layer that computes the official maths in a cheaper, equivalent way (yolo-attn's EMA)
  declares its official formulation (:mod:`yolo_attn.bench.official_flops`); the formulation is run on the module's
  real inputs under the same counter and its count replaces the module's executed count. Layers that declare none,
  and every stock module, are counted as executed in both columns.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "FLOPS_CONVENTION",
    "FlopCountError",
    "FlopReport",
    "OpCounter",
    "as_hw",
    "count_flops",
    "fuse_model",
    "input_channels",
    "plugin_layer_types",
    "thop_cross_check",
    "ultralytics_get_flops",
]

FLOPS_CONVENTION = (
    "GFLOPs = 2 x MACs / 1e9 of convolutions and matrix products (bias adds excluded), counted per aten op at the real "
    "input size on the fused eval model, each plugin layer counted as its official formulation computes it (the "
    "published convention); 'executed' GFLOPs count what this implementation runs. Elementwise ops reported "
    "separately: pointwise and bias adds 1/output element, reductions 1/input element (var/std 2), softmax "
    "3/element, inference batch norm 2/element, group/layer norm 3 (+1 affine)/element, pooling 1/window element, "
    "adaptive pooling 1/input element, resampling 1/output element; data movement 0."
)

aten = torch.ops.aten
_CIA = torch._C.DispatchKey.CompositeImplicitAutograd


class FlopCountError(RuntimeError):
    """Counting failed or produced a count that cannot be right (e.g. 0 MACs for a model with parameters)."""


# ---------------------------------------------------------------------------------------------------------- op rules
# Each rule maps (args, kwargs, out) -> (macs, elementwise_ops). Rules are keyed by overload *packet* so that one
# entry covers every overload (``conv2d.default``/``conv2d.padding``, ``upsample_nearest2d.vec``/``.default``).


def _packets(*names: str) -> list[Any]:
    """The aten packets of ``names`` that exist in this torch (some are backend- or version-specific)."""
    return [p for p in (getattr(aten, n, None) for n in names) if p is not None]


def first_tensor(out: Any) -> torch.Tensor | None:
    """The first tensor in a module's output (Detect and friends return tuples and lists of tensors)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            t = first_tensor(o)
            if t is not None:
                return t
    return None


def _clone(obj: Any) -> Any:
    """Copy every tensor in a nested tuple/list/dict (other values as they are)."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # named tuple
        return type(obj)(*(_clone(o) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_clone(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return obj


def _numel(out: Any) -> int:
    t = first_tensor(out)
    return t.numel() if t is not None else 0


def _conv_rule(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups): the weight is
    # (C_out, C_in/groups, *k) for a normal conv and (C_in, C_out/groups, *k) for a transposed one, so the MACs are
    # "elements of the side that gathers" x weight.shape[1] x kernel volume in both cases.
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    transposed = bool(args[6]) if len(args) > 6 else bool(kwargs.get("transposed", False))
    y = first_tensor(out)
    gathered = x.numel() if transposed else y.numel()
    macs = gathered * w.shape[1] * math.prod(w.shape[2:])
    return macs, y.numel() if bias is not None else 0


def _mm_rule(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    a = args[0]  # mm(a, b), bmm(a, b), mv(a, v), dot(a, b): every output element contracts a's last axis
    return _numel(out) * a.shape[-1], 0


def _addmm_rule(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    a = args[1]  # addmm(bias, a, b), baddbmm(bias, a, b), addmv(bias, a, v): product + one bias add per output
    return _numel(out) * a.shape[-1], _numel(out)


def _addmm_act_rule(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    macs, elem = _addmm_rule(args, kwargs, out)
    return macs, 2 * elem  # bias add + fused activation


def _sdpa_rule(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    # q (..., L, E), k (..., S, E), v (..., S, Ev): QK^T is L*S*E MACs, (attn)V is L*S*Ev, per batch-head
    q, k, v = args[0], args[1], args[2]
    batch_heads = math.prod(q.shape[:-2])
    scores = batch_heads * q.shape[-2] * k.shape[-2]
    return scores * (q.shape[-1] + v.shape[-1]), 4 * scores  # scale + softmax (3) per score


def _per_output(factor: int = 1) -> Callable[[tuple, dict, Any], tuple[int, int]]:
    def rule(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
        return 0, factor * _numel(out)

    return rule


def _per_input(factor: int = 1) -> Callable[[tuple, dict, Any], tuple[int, int]]:
    def rule(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
        return 0, factor * args[0].numel()

    return rule


def _batch_norm_rule(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    # native_batch_norm / cudnn_batch_norm (input, weight, bias, running_mean, running_var, training, ...):
    # inference folds into one scale and one shift per element; training also computes the statistics.
    training = bool(args[5]) if len(args) > 5 and isinstance(args[5], bool) else False
    return 0, (4 if training else 2) * args[0].numel()


def _bn_no_training_rule(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    return 0, 2 * args[0].numel()


def _group_norm_rule(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    # native_group_norm(input, weight, bias, N, C, HxW, group, eps): statistics (2) + normalise (1) + affine (1)
    affine = isinstance(args[1], torch.Tensor) or isinstance(args[2], torch.Tensor)
    return 0, (3 + int(affine)) * args[0].numel()


def _layer_norm_rule(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    # native_layer_norm(input, normalized_shape, weight, bias, eps)
    affine = any(isinstance(a, torch.Tensor) for a in args[2:4])
    return 0, (3 + int(affine)) * args[0].numel()


def _pool_rule(args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    y = first_tensor(out)
    kernel = args[1] if len(args) > 1 else kwargs.get("kernel_size")
    spatial = y.dim() - 2 if y.dim() >= 3 else 1
    if isinstance(kernel, int):
        kernel = [kernel] * spatial
    elif len(kernel) == 1:
        kernel = list(kernel) * spatial
    return 0, y.numel() * math.prod(kernel)


_RULES: dict[Any, Callable[[tuple, dict, Any], tuple[int, int]]] = {}
for _p in _packets("convolution", "_convolution", "convolution_overrideable"):
    _RULES[_p] = _conv_rule
for _p in _packets("mm", "bmm", "dot", "vdot", "mv"):
    _RULES[_p] = _mm_rule
for _p in _packets("addmm", "baddbmm", "addmv"):
    _RULES[_p] = _addmm_rule
for _p in _packets("_addmm_activation"):
    _RULES[_p] = _addmm_act_rule
for _p in _packets(
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
):
    _RULES[_p] = _sdpa_rule
for _p in _packets(
    "sum", "mean", "nansum", "nanmean", "amax", "amin", "argmax", "argmin", "max", "min", "prod", "logsumexp",
    "aminmax", "norm", "linalg_vector_norm", "cumsum", "cumprod", "logcumsumexp", "_adaptive_avg_pool2d",
    "_adaptive_avg_pool3d", "adaptive_max_pool2d", "adaptive_max_pool3d", "adaptive_max_pool1d",
    "mkldnn_adaptive_avg_pool2d",
):  # fmt: skip
    _RULES[_p] = _per_input(1)
for _p in _packets("var", "std", "var_mean", "std_mean"):
    _RULES[_p] = _per_input(2)
for _p in _packets("_softmax", "_log_softmax", "_safe_softmax"):
    _RULES[_p] = _per_input(3)
for _p in _packets("native_batch_norm", "cudnn_batch_norm", "miopen_batch_norm", "_native_batch_norm_legit"):
    _RULES[_p] = _batch_norm_rule
for _p in _packets("_native_batch_norm_legit_no_training", "_batch_norm_no_update"):
    _RULES[_p] = _bn_no_training_rule
for _p in _packets("native_group_norm"):
    _RULES[_p] = _group_norm_rule
for _p in _packets("native_layer_norm"):
    _RULES[_p] = _layer_norm_rule
for _p in _packets(
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "mkldnn_max_pool2d", "mkldnn_max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
):  # fmt: skip
    _RULES[_p] = _pool_rule
for _p in _packets(
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d",
    "upsample_bicubic2d", "upsample_trilinear3d", "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa",
    "grid_sampler_2d", "grid_sampler_3d",
    # activations with their own kernels that carry no `pointwise` tag
    "hardswish", "hardswish_", "_prelu_kernel", "glu", "rrelu_with_noise",
):  # fmt: skip
    _RULES[_p] = _per_output(1)

# Packets whose work is only data movement or allocation. ``clone`` carries the pointwise tag but only copies.
_ZERO: frozenset[Any] = frozenset(
    _packets(
        "view",
        "_unsafe_view",
        "reshape",
        "_reshape_alias",
        "view_as",
        "cat",
        "stack",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
        "slice",
        "select",
        "narrow",
        "permute",
        "transpose",
        "t",
        "expand",
        "expand_as",
        "unsqueeze",
        "squeeze",
        "squeeze_",
        "unsqueeze_",
        "flatten",
        "unflatten",
        "clone",
        "copy_",
        "contiguous",
        "_to_copy",
        "to",
        "detach",
        "alias",
        "as_strided",
        "empty",
        "empty_like",
        "empty_strided",
        "new_empty",
        "new_empty_strided",
        "zeros",
        "zeros_like",
        "ones",
        "ones_like",
        "full",
        "full_like",
        "new_full",
        "new_zeros",
        "new_ones",
        "fill_",
        "fill",
        "zero_",
        "arange",
        "linspace",
        "scalar_tensor",
        "lift_fresh",
        "lift_fresh_copy",
        "_local_scalar_dense",
        "item",
        "index",
        "_unsafe_index",
        "index_select",
        "gather",
        "repeat",
        "constant_pad_nd",
        "reflection_pad2d",
        "replication_pad2d",
        "roll",
        "flip",
        "pixel_shuffle",
        "pixel_unshuffle",
        "channel_shuffle",
        "native_channel_shuffle",
        "unfold",
        "meshgrid",
        "type_as",
        "dropout",
        "native_dropout",
        "feature_dropout",
        "randn",
        "rand",
        "randint",
        "normal_",
        "uniform_",
        "masked_select",
        "nonzero",
        "resize_",
        "set_",
        "_assert_async",
        "sym_size",
        "sym_stride",
        "sym_numel",
        "_assert_tensor_metadata",
        "slice_scatter",
        "select_scatter",
        "index_put_",
        "index_put",
        "_index_put_impl_",
        "diagonal",
        "movedim",
        "swapaxes",
        "tensor_split",
        "tile",
        "broadcast_to",
    )  # fmt: skip
)


@dataclass
class FlopReport:
    """What :func:`count_flops` measured for one model at one input shape.

    Attributes:
        model: Display name of the model.
        input_shape: The (B, C, H, W) input the forward pass ran on.
        macs: Conv + matmul multiply-accumulates (bias adds excluded), plugin layers by their official formulation.
        elementwise_ops: Elementwise ops under :data:`FLOPS_CONVENTION`, same convention as ``macs``.
        params: Parameter count of the counted (fused) model.
        executed_macs: MACs of what the model executed (equal to ``macs`` when no module declares an official
            formulation that differs from its forward).
        executed_elementwise_ops: Elementwise ops of what the model executed.
        official_formulations: One entry per module counted by its declared official formulation: ``name``,
            ``class``, ``formulation`` (``module:function``), ``calls``, ``input_shapes``, ``macs`` and
            ``elementwise_ops`` (official), ``executed_macs`` and ``executed_elementwise_ops``, ``max_rel_diff``
            (formulation output vs the module's own output).
        functional_conv_macs: MACs of convolutions not run as an ``nn.Conv*d`` module's own forward (``F.conv2d``
            with borrowed weights): module-hook counters such as thop cannot see them.
        by_op: aten op -> {"calls", "macs", "elementwise_ops"} of the executed ops.
        uncounted_ops: aten ops that have no rule here -> number of calls (their work is missing from the counts).
        layers: One row per top-level layer (``model.model[i]`` for Ultralytics models, children otherwise), with
            official (``macs``, ``gflops``, ``elementwise_ops``) and ``executed_*`` counts.
        plugin_modules: One row per plugin-layer instance (types registered in ``yolo_attn.plugin.registry``), same
            fields plus ``formulation`` (the official formulation counted, or ``"as executed"``).
        notes: Caveats found while counting.
    """

    model: str
    input_shape: list[int]
    macs: int
    elementwise_ops: int
    params: int
    executed_macs: int | None = None
    executed_elementwise_ops: int | None = None
    functional_conv_macs: int = 0
    by_op: dict[str, dict[str, int]] = field(default_factory=dict)
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    plugin_modules: list[dict[str, Any]] = field(default_factory=list)
    official_formulations: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.executed_macs is None:
            self.executed_macs = self.macs
        if self.executed_elementwise_ops is None:
            self.executed_elementwise_ops = self.elementwise_ops

    @property
    def gflops(self) -> float:
        """Conv + matmul GFLOPs (2 x MACs / 1e9), plugin layers by their official formulation (the headline)."""
        return 2 * self.macs / 1e9

    @property
    def executed_gflops(self) -> float:
        """Conv + matmul GFLOPs of what the model executed."""
        return 2 * self.executed_macs / 1e9

    @property
    def elementwise_gops(self) -> float:
        """Elementwise ops in billions (official formulation)."""
        return self.elementwise_ops / 1e9

    @property
    def executed_elementwise_gops(self) -> float:
        """Elementwise ops in billions, as executed."""
        return self.executed_elementwise_ops / 1e9

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, plus the derived ``gflops``, ``executed_gflops``, ``*_gops`` fields."""
        d = asdict(self)
        d["gflops"] = self.gflops
        d["executed_gflops"] = self.executed_gflops
        d["elementwise_gops"] = self.elementwise_gops
        d["executed_elementwise_gops"] = self.executed_elementwise_gops
        return d


class OpCounter(TorchDispatchMode):
    """Count MACs and elementwise ops of every aten op run inside the context, attributed to modules.

    Ops without a rule that are composite (``matmul``, ``einsum``, ``linear``, ``group_norm``...) are decomposed so the
    count happens on the ops they lower to; whatever is left without a rule is recorded in ``uncounted``.

    Args:
        model: If given, forward pre/post hooks on every submodule attribute each op to all modules on the call stack
            (inclusive counts in ``module_counts``, keyed by qualified name; the root is ``""``). ``GateTap`` markers
            are not hooked: a hook on one tells its layer that someone reads the gate, which switches the layer to
            the path that materialises it, and that path is not what runs in inference.
        record_calls: Qualified names of modules whose inputs and output are kept (copies) for every call, in
            ``calls[name] = [(args, kwargs, output), ...]`` (used to count official formulations on the real inputs).

    Example:
        >>> conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        >>> with torch.inference_mode(), OpCounter(conv) as counter:
        ...     _ = conv(torch.zeros(1, 3, 4, 4))
        >>> counter.macs  # 8 * 4 * 4 outputs x 3 * 3 * 3 MACs each
        3456
    """

    def __init__(self, model: nn.Module | None = None, record_calls: Sequence[str] = ()) -> None:
        super().__init__()
        self.model = model
        self.record_calls = frozenset(record_calls)
        self.calls: dict[str, list[tuple[tuple, dict, Any]]] = defaultdict(list)
        self._pending: dict[str, list[tuple[tuple, dict]]] = defaultdict(list)
        self.macs = 0
        self.elementwise = 0
        self.functional_conv_macs = 0
        self.by_op: dict[str, dict[str, int]] = defaultdict(lambda: {"calls": 0, "macs": 0, "elementwise_ops": 0})
        self.uncounted: dict[str, int] = defaultdict(int)
        self.module_counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # name -> [macs, elementwise]
        self.module_shapes: dict[str, list[int]] = {}
        self._stack: list[tuple[str, nn.Module]] = []
        self._handles: list[Any] = []
        self._depth = 0

    # -- module tracking
    def _attach(self) -> None:
        if self.model is None:
            return
        from yolo_attn.layers._gate import GateTap

        for name, module in self.model.named_modules():
            if isinstance(module, GateTap):
                continue
            record = name in self.record_calls

            def pre(mod: nn.Module, args: tuple, kwargs: dict, name: str = name, record: bool = record) -> None:
                self._stack.append((name, mod))
                if record:  # copies: a later in-place op must not change what the formulation will be run on
                    self._pending[name].append((_clone(args), _clone(kwargs)))

            def post(
                mod: nn.Module, args: tuple, kwargs: dict, output: Any, name: str = name, record: bool = record
            ) -> None:
                # pop up to and including this module: an exception inside a child must not leave it stacked
                while self._stack:
                    top, _ = self._stack.pop()
                    if top == name:
                        break
                t = first_tensor(output)
                if t is not None:
                    self.module_shapes[name] = list(t.shape)
                if record and self._pending[name]:
                    self.calls[name].append((*self._pending[name].pop(), _clone(output)))

            self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            self._handles.append(module.register_forward_hook(post, with_kwargs=True))

    def _detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._stack.clear()

    def __enter__(self) -> OpCounter:
        # The mode re-enters itself to decompose composite ops: only the outermost entry owns the hooks.
        if self._depth == 0:
            self._attach()
        self._depth += 1
        try:
            return super().__enter__()
        except BaseException:
            self._exit_hooks()
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._exit_hooks()

    def _exit_hooks(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._detach()

    # -- counting
    def _add(self, func: Any, macs: int, elementwise: int, is_conv: bool) -> None:
        self.macs += macs
        self.elementwise += elementwise
        rec = self.by_op[str(func._overloadpacket)]
        rec["calls"] += 1
        rec["macs"] += macs
        rec["elementwise_ops"] += elementwise
        if is_conv and macs and not (self._stack and isinstance(self._stack[-1][1], nn.modules.conv._ConvNd)):
            self.functional_conv_macs += macs
        seen: set[str] = set()
        for name, _ in self._stack:
            if name not in seen:  # a module re-entered through itself is counted once
                seen.add(name)
                counts = self.module_counts[name]
                counts[0] += macs
                counts[1] += elementwise

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet in _ZERO:
            return func(*args, **kwargs)
        if torch.Tag.pointwise in func.tags:  # checked before the rules: aten.max.other is pointwise, max.dim is not
            out = func(*args, **kwargs)
            self._add(func, 0, _numel(out), False)
            return out
        rule = _RULES.get(packet)
        if rule is not None:
            out = func(*args, **kwargs)
            macs, elementwise = rule(args, kwargs, out)
            self._add(func, int(macs), int(elementwise), rule is _conv_rule)
            return out
        if func.has_kernel_for_dispatch_key(_CIA):
            with self:  # re-enter so the ops it lowers to are counted (as torch's FlopCounterMode does)
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        self.uncounted[str(func)] += 1
        return func(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------- model helpers
def plugin_layer_types() -> dict[type, str]:
    """Layer classes registered in ``yolo_attn.plugin.registry`` -> registered name ({} if it cannot be imported)."""
    try:
        from yolo_attn.plugin import registry

        return {spec.cls: spec.name for spec in registry.specs()}
    except Exception:  # noqa: BLE001 - counting must not depend on the plugin importing cleanly
        return {}


def _plugin_matcher() -> Callable[[nn.Module], str | None]:
    """Registered name of a module's class; falls back to classes defined in ``yolo_attn.layers`` only when the
    registry is unavailable (so helpers inside a layer, e.g. ODConv's attention, are not listed as layers)."""
    types = plugin_layer_types()
    if types:
        return lambda m: types.get(type(m))
    return lambda m: type(m).__name__ if type(m).__module__.startswith("yolo_attn.layers") else None


def fuse_model(model: nn.Module) -> list[str]:
    """Fuse a model in place for inference, and return the names of plugin modules whose own ``fuse()`` ran.

    Ultralytics models use ``BaseModel.fuse`` (Conv+BN, RepConv, Detect's spare branch). For other modules the same
    Conv/DWConv + BN folding is applied to any Ultralytics ``Conv`` found inside. Ultralytics' fuse knows nothing about
    plugin layers, so every plugin module that defines ``fuse()`` (e.g. ODConv folding its BN) has it called.

    Args:
        model: The model, in place.

    Returns:
        Qualified names of the plugin modules that were fused by their own ``fuse()``.

    Raises:
        FlopCountError: A plugin module's ``fuse()`` raised (the model would otherwise be measured half-fused).
    """
    from ultralytics.nn.tasks import BaseModel

    if isinstance(model, BaseModel):
        model.fuse(verbose=False)
    else:
        from ultralytics.nn.modules import Conv, DWConv
        from ultralytics.utils.torch_utils import fuse_conv_and_bn

        for m in model.modules():
            if isinstance(m, (Conv, DWConv)) and hasattr(m, "bn") and type(m) in (Conv, DWConv):
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.forward_fuse
    is_plugin = _plugin_matcher()
    fused = []
    for name, m in model.named_modules():
        if is_plugin(m) and callable(getattr(m, "fuse", None)):
            try:
                m.fuse()
            except Exception as exc:
                raise FlopCountError(f"fuse() of plugin module {name!r} ({type(m).__name__}) failed: {exc!r}") from exc
            fused.append(name)
    return fused


def as_hw(imgsz: int | Sequence[int]) -> tuple[int, int]:
    """``640`` -> ``(640, 640)``; ``[480, 640]`` -> ``(480, 640)`` (h, w)."""
    if isinstance(imgsz, int):
        return imgsz, imgsz
    hw = [int(v) for v in imgsz]
    if len(hw) == 1:
        return hw[0], hw[0]
    if len(hw) != 2:
        raise ValueError(f"imgsz must be an int or (h, w); got {imgsz!r}")
    return hw[0], hw[1]


def input_channels(model: nn.Module) -> int:
    """Input channels of a model: Ultralytics YAML ``channels``, a plugin layer's ``c1``, else the first conv's."""
    yaml = getattr(model, "yaml", None)
    if isinstance(yaml, dict) and "channels" in yaml:
        return int(yaml["channels"])
    c1 = getattr(model, "c1", None)  # plugin layers record their input width
    if isinstance(c1, int) and not isinstance(c1, bool):
        return c1
    for m in model.modules():  # the first convolution's input width
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.in_channels
    return 3


class _Counts:
    """Executed and official (macs, elementwise) per qualified module name.

    ``official[d]`` holds, for each outermost module ``d`` counted by its official formulation, the formulation's
    own per-module counts (relative names, ``""`` = ``d`` itself). A module inside ``d`` takes its count from there;
    any other module's official count is its executed count with every ``d`` inside it swapped for the formulation.
    """

    def __init__(self, executed: dict[str, list[int]], official: dict[str, dict[str, list[int]]]) -> None:
        self.executed = executed
        self.official = official

    def executed_of(self, name: str) -> tuple[int, int]:
        macs, elem = self.executed.get(name, (0, 0))
        return int(macs), int(elem)

    def official_of(self, name: str) -> tuple[int, int]:
        for d, sub in self.official.items():
            if _within(name, d):
                rel = name if d == "" else name[len(d) + 1 :]
                macs, elem = sub.get(rel, (0, 0))
                return int(macs), int(elem)
        macs, elem = self.executed_of(name)
        for d, sub in self.official.items():
            if _within(d, name):  # (d == name returned above) a formulation nested in this module
                d_macs, d_elem = self.executed_of(d)
                macs += int(sub[""][0]) - d_macs
                elem += int(sub[""][1]) - d_elem
        return macs, elem


def _cost_fields(m: nn.Module, name: str, counts: _Counts, shapes: dict[str, list[int]]) -> dict:
    """The counted fields every breakdown row shares: official (headline) and executed counts."""
    macs, elem = counts.official_of(name)
    exec_macs, exec_elem = counts.executed_of(name)
    return {
        "params": sum(p.numel() for p in m.parameters()),
        "macs": macs,
        "gflops": 2 * macs / 1e9,
        "elementwise_ops": elem,
        "executed_macs": exec_macs,
        "executed_gflops": 2 * exec_macs / 1e9,
        "executed_elementwise_ops": exec_elem,
        "output_shape": shapes.get(name),
    }


def _layer_rows(model: nn.Module, counts: _Counts, shapes: dict[str, list[int]]) -> list[dict]:
    seq = getattr(model, "model", None)
    if isinstance(seq, nn.Sequential):  # Ultralytics: model.model[i] with .i/.f/.type set by parse_model
        items, prefix = list(seq.named_children()), "model."
    else:
        items, prefix = list(model.named_children()), ""
    rows = []
    for idx, (child_name, m) in enumerate(items):
        name = prefix + child_name
        rows.append(
            {
                "index": getattr(m, "i", idx),
                "name": name,
                "from": getattr(m, "f", None),
                # Ultralytics sets a string `.type`; on other modules `.type` is nn.Module's dtype-cast method
                "type": m.type if isinstance(getattr(m, "type", None), str) else type(m).__name__,
                **_cost_fields(m, name, counts, shapes),
            }
        )
    return rows


def _plugin_rows(
    model: nn.Module, counts: _Counts, shapes: dict[str, list[int]], formulations: dict[str, str]
) -> list[dict]:
    is_plugin = _plugin_matcher()
    seq_prefix = "model." if isinstance(getattr(model, "model", None), nn.Sequential) else ""
    rows: list[dict] = []
    for name, m in model.named_modules():
        layer = is_plugin(m)
        if not layer or any(name.startswith(r["name"] + ".") for r in rows):
            continue  # a plugin layer nested in another is part of its parent's row
        rest = name[len(seq_prefix) :] if name.startswith(seq_prefix) else name
        head = rest.split(".", 1)[0]
        rows.append(
            {
                "name": name,
                "layer": layer,
                "layer_index": int(head) if head.isdigit() else None,
                "class": f"{type(m).__module__}.{type(m).__qualname__}",
                **_cost_fields(m, name, counts, shapes),
                "formulation": _row_formulation(name, formulations),
            }
        )
    return rows


def _within(name: str, ancestor: str) -> bool:
    """Whether the module called ``name`` is ``ancestor`` or nested inside it (``""`` is the root)."""
    return ancestor == "" or name == ancestor or name.startswith(ancestor + ".")


def _row_formulation(name: str, formulations: dict[str, str]) -> str:
    """Which official formulations a row's headline count comes from ("as executed" when none)."""
    used = []
    for d, f in formulations.items():
        if _within(name, d):  # the row is (inside) a module with a formulation
            used.append(f)
        elif _within(d, name):  # a module with a formulation is nested in the row
            used.append(f"{d[len(name) + 1 :] if name else d}: {f}")
    return "; ".join(used) if used else "as executed"


def _outermost_formulations(model: nn.Module) -> dict[str, tuple[nn.Module, Callable[..., Any]]]:
    """Modules that declare an official formulation, outermost only (a formulation covers everything inside it)."""
    from yolo_attn.bench.official_flops import official_formulation_of

    found: dict[str, tuple[nn.Module, Callable[..., Any]]] = {}
    for name, m in model.named_modules():
        if any(_within(name, d) for d in found):  # (names are unique: never d == name)
            continue
        fn = official_formulation_of(m)
        if fn is not None:
            found[name] = (m, fn)
    return found


def _rel_diff(ref: Any, out: Any) -> float:
    """Largest relative L2 difference between corresponding tensors of two (nested) outputs; inf if they differ in
    structure or shape."""
    if isinstance(out, torch.Tensor):
        if not isinstance(ref, torch.Tensor) or ref.shape != out.shape:
            return math.inf
        scale = out.float().norm().item()
        err = (ref.float() - out.float()).norm().item()
        return err / scale if scale > 0 else err
    if isinstance(out, (tuple, list)):
        if not isinstance(ref, (tuple, list)) or len(ref) != len(out):
            return math.inf
        return max((_rel_diff(r, o) for r, o in zip(ref, out)), default=0.0)
    if isinstance(out, dict):
        if not isinstance(ref, dict) or ref.keys() != out.keys():
            return math.inf
        return max((_rel_diff(ref[k], out[k]) for k in out), default=0.0)
    return 0.0


def _randn_like(obj: Any, gen: torch.Generator) -> Any:
    if isinstance(obj, torch.Tensor) and obj.is_floating_point():
        return torch.randn(obj.shape, generator=gen).to(obj.device, obj.dtype)
    return obj


def _count_formulations(
    model_name: str, declared: dict[str, tuple[nn.Module, Callable[..., Any]]], counter: OpCounter
) -> tuple[dict[str, dict[str, list[int]]], list[dict[str, Any]]]:
    """Run each declared formulation on the inputs its module received in the counting pass, under a fresh counter.

    Raises:
        FlopCountError: A formulation raised, or its output differs from the module's own output.
    """
    from yolo_attn.bench.official_flops import FORMULATION_RTOL, formulation_name

    official: dict[str, dict[str, list[int]]] = {}
    entries: list[dict[str, Any]] = []
    for name, (module, fn) in declared.items():
        calls = counter.calls.get(name) or []
        if not calls:
            continue  # never called in this forward: nothing to substitute
        sub = OpCounter(module)
        worst = 0.0
        shapes = []
        for args, kwargs, out in calls:
            try:
                with torch.inference_mode(), sub:
                    ref = fn(module, *args, **kwargs)
            except Exception as exc:
                raise FlopCountError(
                    f"counting FLOPs of {model_name}: the official formulation {formulation_name(fn)} of module "
                    f"{name or '<root>'} ({type(module).__name__}) raised {exc!r}"
                ) from exc
            worst = max(worst, _rel_diff(ref, out))
            t = first_tensor(args)
            shapes.append(list(t.shape) if t is not None else None)
        # The counting input is often all zeros (so are a random-weight model's activations): check the maths on
        # random inputs of the recorded shapes too, outside the counter.
        args, kwargs, _ = calls[0]
        gen = torch.Generator(device="cpu").manual_seed(0)
        noisy = tuple(_randn_like(a, gen) for a in args)
        try:
            with torch.inference_mode():
                worst = max(worst, _rel_diff(fn(module, *noisy, **kwargs), module(*noisy, **kwargs)))
        except Exception as exc:
            raise FlopCountError(
                f"counting FLOPs of {model_name}: checking the official formulation {formulation_name(fn)} of module "
                f"{name or '<root>'} ({type(module).__name__}) on a random input raised {exc!r}"
            ) from exc
        if not worst <= FORMULATION_RTOL:
            raise FlopCountError(
                f"counting FLOPs of {model_name}: the official formulation {formulation_name(fn)} of module "
                f"{name or '<root>'} ({type(module).__name__}) does not compute the module's output (relative L2 "
                f"difference {worst:.3g} > {FORMULATION_RTOL}); its count would not describe this layer"
            )
        official[name] = {k: list(v) for k, v in sub.module_counts.items()}
        official[name][""] = [sub.macs, sub.elementwise]  # the formulation is a function of the module, not its call
        exec_macs, exec_elem = counter.module_counts.get(name, (0, 0))
        entries.append(
            {
                "name": name,
                "class": f"{type(module).__module__}.{type(module).__qualname__}",
                "formulation": formulation_name(fn),
                "calls": len(calls),
                "input_shapes": shapes,
                "macs": int(official[name][""][0]),
                "elementwise_ops": int(official[name][""][1]),
                "executed_macs": int(exec_macs),
                "executed_elementwise_ops": int(exec_elem),
                "max_rel_diff": worst,
            }
        )
    return official, entries


def count_flops(
    model: nn.Module,
    imgsz: int | Sequence[int] = 640,
    *,
    batch: int = 1,
    channels: int | None = None,
    name: str | None = None,
    official: bool = True,
) -> FlopReport:
    """Count MACs and elementwise ops of one eval forward pass at the real input size.

    The model is counted as given (call :func:`fuse_model` first for fused figures), in eval mode under
    ``torch.inference_mode()``, on the device and dtype of its first parameter. Training/eval mode is restored.

    Args:
        model: Any ``nn.Module`` taking one (B, C, H, W) tensor.
        imgsz: Square size or (h, w); the input is exactly this size (no stride extrapolation).
        batch: Batch size of the counted input (1 = per-image counts).
        channels: Input channels; default from the Ultralytics YAML, else the first conv's ``in_channels``.
        name: Model name used in reports and error messages.
        official: Count modules that declare an official formulation (:mod:`yolo_attn.bench.official_flops`) by
            it in the headline fields (the default; ``executed_*`` always hold the executed counts). False: the
            headline fields are the executed counts too.

    Returns:
        A :class:`FlopReport`.

    Raises:
        FlopCountError: The forward pass failed, it counted 0 MACs for a model that has convolutions or linear
            layers (or counted nothing at all in a model with parameters), or a declared official formulation failed
            or does not compute its module's output.

    Example:
        >>> from ultralytics.nn.tasks import DetectionModel
        >>> m = DetectionModel("yolov8s.yaml", verbose=False)
        >>> _ = fuse_model(m)
        >>> round(count_flops(m, 640).gflops, 1)
        28.6
    """
    name = name or type(model).__name__
    h, w = as_hw(imgsz)
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    c = channels or input_channels(model)
    x = torch.zeros(batch, c, h, w, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        declared = _outermost_formulations(model) if official else {}
    except ValueError as exc:
        raise FlopCountError(f"counting FLOPs of {name}: {exc}") from exc
    counter = OpCounter(model, record_calls=list(declared))
    try:
        with torch.inference_mode(), counter:
            model(x)
        official_counts, formulation_entries = _count_formulations(name, declared, counter)
    except FlopCountError:
        raise
    except Exception as exc:
        raise FlopCountError(f"counting FLOPs of {name} at input {list(x.shape)} failed: {exc!r}") from exc
    finally:
        counter.calls.clear()
        model.train(was_training)
    params = sum(q.numel() for q in model.parameters())
    # 0 MACs is legitimate for a layer whose parameters only scale or normalise (Shuffle Attention, NAM), but not
    # for a model that holds convolutions or linear layers, nor when nothing at all was counted.
    has_matmul_modules = any(isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) for m in model.modules())
    if counter.macs == 0 and params and (has_matmul_modules or counter.elementwise == 0):
        raise FlopCountError(
            f"counting FLOPs of {name} at input {list(x.shape)} found 0 conv/matmul MACs in a model with {params:,} "
            "parameters and convolution/linear layers; refusing to report 0"
        )
    counts = _Counts(counter.module_counts, official_counts)
    total_macs, total_elem = counter.macs, counter.elementwise
    for entry in formulation_entries:
        total_macs += entry["macs"] - entry["executed_macs"]
        total_elem += entry["elementwise_ops"] - entry["executed_elementwise_ops"]
    labels = {e["name"]: e["formulation"] for e in formulation_entries}
    report = FlopReport(
        model=name,
        input_shape=list(x.shape),
        macs=total_macs,
        elementwise_ops=total_elem,
        params=params,
        executed_macs=counter.macs,
        executed_elementwise_ops=counter.elementwise,
        functional_conv_macs=counter.functional_conv_macs,
        by_op={k: dict(v) for k, v in sorted(counter.by_op.items())},
        uncounted_ops=dict(sorted(counter.uncounted.items())),
        layers=_layer_rows(model, counts, counter.module_shapes),
        plugin_modules=_plugin_rows(model, counts, counter.module_shapes, labels),
        official_formulations=formulation_entries,
    )
    if report.uncounted_ops:
        report.notes.append(f"ops without a counting rule (their work is missing): {', '.join(report.uncounted_ops)}")
    return report


# ------------------------------------------------------------------------------------------------ cross-check counters
def _thop_subtree(tree: dict, dotted: str) -> float | None:
    node: Any = (None, None, tree)
    for part in dotted.split("."):
        children = node[2]
        if part not in children:
            return None
        node = children[part]
    return float(node[0])


def thop_cross_check(model: nn.Module, report: FlopReport) -> dict[str, Any]:
    """Count the same model with ultralytics-thop at the same real input shape and compare.

    Fills ``thop_gflops`` per plugin module in ``report.plugin_modules`` as a side effect (per-module cross-check).

    Args:
        model: The model that ``report`` was counted on (same fusion state).
        report: Result of :func:`count_flops`.

    Returns:
        ``{"thop_gflops", "disagreement_pct", "notes"}``; the disagreement is relative to the *executed* count
        (thop sees what runs, not a declared official formulation). If thop raises, ``thop_gflops`` is None and
        ``error`` says why (a failure is never shown as 0.0); a 0 that thop computed without error is kept, with a
        note.
    """
    out: dict[str, Any] = {"thop_gflops": None, "disagreement_pct": None, "notes": []}
    try:
        import thop
    except ImportError as exc:
        out["error"] = f"thop not importable: {exc}"
        return out
    p = next(model.parameters(), None)
    x = torch.zeros(report.input_shape, device=p.device if p is not None else "cpu")
    if p is not None and p.is_floating_point():
        x = x.to(p.dtype)
    try:
        macs, _, tree = thop.profile(model, inputs=[x], verbose=False, ret_layer_info=True)
    except Exception as exc:  # noqa: BLE001 - a failed cross-check is reported, not fatal
        out["error"] = f"thop.profile failed: {exc!r}"
        return out
    thop_gflops = 2 * float(macs) / 1e9
    out["thop_gflops"] = thop_gflops
    executed = report.executed_gflops  # thop counts what runs, so it is compared with the executed count
    out["disagreement_pct"] = 100.0 * (thop_gflops - executed) / executed if executed else None
    for row in report.plugin_modules:
        sub = _thop_subtree(tree, row["name"])
        row["thop_gflops"] = 2 * sub / 1e9 if sub is not None else None
    notes = out["notes"]
    if report.functional_conv_macs:
        notes.append(
            f"thop does not see convolutions called functionally (F.conv2d with a module's weights): "
            f"{2 * report.functional_conv_macs / 1e9:.4f} GFLOPs here are missing from thop"
        )
    extra = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _THOP_NON_MAC_MODULES)})
    if extra:
        notes.append(
            f"thop adds the elementwise work of these modules into its MACs (not conv/matmul work): {', '.join(extra)}"
        )
    notes.append("thop ignores elementwise ops called functionally (x * y, sigmoid, ...)")
    if not macs and report.macs:  # thop ran without error: its 0 is what its rules see, shown with the reason
        notes.append("thop counted 0 MACs: it saw no conv/linear module calls (functional work only)")
    return out


# Module types whose thop rule counts elementwise work (normalisation, softmax, average pooling, interpolation).
_THOP_NON_MAC_MODULES = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.Softmax,
    nn.LogSoftmax,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.Upsample,
    nn.PReLU,
)


def ultralytics_get_flops(model: nn.Module, imgsz: int | Sequence[int] = 640) -> float | None:
    """Ultralytics' own ``get_flops`` (stride-proxy extrapolation), or None where it returned its 0.0 failure value.

    Reported beside the real-size count so the extrapolation error is visible; never used as the headline figure.
    """
    from ultralytics.utils.torch_utils import get_flops

    h, w = as_hw(imgsz)
    value = float(get_flops(model, [h, w]))
    return value or None
