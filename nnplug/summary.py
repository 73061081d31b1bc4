"""The summary table of a built model: what ``nnplug validate`` prints.

It needs no weights: a model built with ``init=False`` is counted from its layers'
``param_shapes`` (see :meth:`nnplug.Model.parameter_counts`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nnplug.graph import Model


def summary_rows(model: Model) -> list[tuple[str, str, str, str, int]]:
    """(node, type, inputs, output shape, parameter count) per node, in execution order."""
    counts = model.parameter_counts()  # from the shapes, where the weights are not drawn
    return [(node.name, node.type, ", ".join(node.inputs), str(node.out_shape), counts[node.name])
            for node in model.nodes]


def summary_table(model: Model) -> str:
    """Node, type, inputs, output shape and parameters, one row per node and one for the
    loss, then the totals and the nodes the loss does not depend on."""
    header = ("node", "type", "inputs", "output shape", "params")
    counted = summary_rows(model)
    rows = [header] + [(a, b, c, d, f"{e:,}") for a, b, c, d, e in counted]
    rows.append(("loss", model.loss.type_name(), model.loss_input, "()", "0"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(f"input {model.input_shape}, dtype {model.dtype}, "
                 f"{sum(row[4] for row in counted):,} parameters in total")
    if model.unused:
        lines.append(unused_note(model))
    return "\n".join(lines)


def unused_note(model: Model) -> str:
    """One line naming the nodes the loss does not depend on (call it when there are some)."""
    shown = ", ".join(repr(n) for n in model.unused[:10]) + (", ..." if len(model.unused) > 10 else "")
    pronoun = "it" if len(model.unused) == 1 else "them"
    return f"unused: {shown}: the loss ({model.loss_input!r}) does not depend on {pronoun}; never run nor trained"
