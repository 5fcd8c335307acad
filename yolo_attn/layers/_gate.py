"""``GateTap``: marks the gate an attention layer multiplies its input by, so it can be read with a forward hook.

A layer declares each gate once in ``__init__`` and passes the gate tensor through it in ``forward``::

    self.spatial_gate = GateTap("spatial")          # in __init__
    return x * self.spatial_gate(torch.sigmoid(s))  # in forward

A layer with several gates gives each a ``label`` (``GateTap("channel", label="channel")``) so figures can name them.
The contract a test checks for every registered attention layer: the layer's output equals its input times the
product of its gates, each broadcast by :meth:`GateTap.broadcast`. Two class attributes on the layer declare the
exceptions: ``gate_combine = "mean"`` (the gates are averaged, not multiplied: TripletAttention) and
``output_channel_shuffle = k`` (the output is ``channel_shuffle(input * gates, k)``: ShuffleAttention).

``GateTap`` is an ``nn.Identity``: no parameters, no ``state_dict`` entries (official checkpoints still load with
``strict=True``), nothing in traced or exported graphs. :mod:`yolo_attn.visualize` hooks every ``GateTap`` of a model
to collect the maps. A layer whose fast path never materialises the gate checks :attr:`GateTap.observed` and takes a
path that does only while someone is reading it.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["GATE_KINDS", "GateTap"]

#: What a gate's shape means relative to the (B, C, H, W) input it multiplies.
GATE_KINDS: dict[str, str] = {
    "spatial": "(B, 1, H, W), or (B, G, H, W) with groups=G: one map per group of C/G consecutive channels",
    "channel": "(B, C, 1, 1): one weight per channel",
    "strip_h": "(B, C, H, 1): one weight per channel and row",
    "strip_w": "(B, C, 1, W): one weight per channel and column",
    "element": "(B, C, H, W): one weight per element (SimAM, NAM, the spatial half of ShuffleAttention)",
}


class GateTap(nn.Identity):
    """Identity module that names a gate tensor for hooks.

    Args:
        kind (str): One of :data:`GATE_KINDS` (how the gate broadcasts against the input).
        groups (int): For ``"spatial"`` gates with one map per channel group (EMA), the number of groups G.
        label (str | None): Short name of this gate within its layer (``"channel"``, ``"h"``); needed only when a
            layer has several gates. Figures fall back to the attribute name.
    """

    #: Class-level default so taps pickled before ``label`` existed still unpickle with it.
    label: str | None = None

    def __init__(self, kind: str, groups: int = 1, label: str | None = None) -> None:
        super().__init__()
        if kind not in GATE_KINDS:
            raise ValueError(f"GateTap: kind={kind!r} is not one of {', '.join(GATE_KINDS)}")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"GateTap: groups must be a positive int, got {groups!r}")
        self.kind, self.groups = kind, groups
        if label is not None:
            self.label = str(label)

    @property
    def observed(self) -> bool:
        """True while a forward (pre-)hook is attached, i.e. someone is reading the gate."""
        return bool(self._forward_hooks or self._forward_pre_hooks)

    @staticmethod
    def broadcast(gate: Tensor, channels: int) -> Tensor:
        """The gate shaped to broadcast against the (B, C, H, W) input it multiplies.

        A gate with one map per group of C/G consecutive channels, (B, G, H, W) with 1 < G < C, is repeated C/G
        times along dim 1; every other shape ((B, 1, H, W), (B, C, 1, 1), (B, C, H, 1), ...) broadcasts as it is.
        """
        g = gate.shape[1]
        if 1 < g < channels:
            if channels % g:
                raise ValueError(f"GateTap.broadcast: {g} gate maps do not divide {channels} channels")
            return gate.repeat_interleave(channels // g, dim=1)
        return gate

    def extra_repr(self) -> str:
        text = f"kind={self.kind!r}" + (f", groups={self.groups}" if self.groups > 1 else "")
        return text + (f", label={self.label!r}" if self.label else "")


class RestoresGateTaps:
    """Mixin for layers released before gate taps existed: ``_add_gate_taps()`` creates the layer's taps, in
    ``__init__`` and again when a checkpoint pickled without them is loaded (old checkpoints keep working)."""

    def _add_gate_taps(self) -> None:
        raise NotImplementedError

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)  # type: ignore[misc]  # nn.Module's
        if not any(isinstance(m, GateTap) for m in self._modules.values()):  # type: ignore[attr-defined]
            self._add_gate_taps()
