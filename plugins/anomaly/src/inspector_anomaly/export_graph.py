"""Graph surgery on an exported ONNX file (the ``onnx`` package only, no torch): keep the outputs
the runtime reads and drop everything that only fed the others.

anomalib's PatchCore export computes ``pred_score`` on every run: the nearest neighbour's index
(ArgMin over the 1024 x M distances), a gather of those bank rows and a re-weighting by the
bank, though the runtime reads only ``anomaly_map`` and scores the part from it. Dropping the
output and what feeds only it removes that work and the bank's second copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def keep_outputs(path: Path, keep: Sequence[str] = ("anomaly_map",)) -> list[str]:
    """Rewrite the ONNX file at ``path`` with only the outputs ``keep``, dropping every node and
    initializer nothing kept depends on (anomalib's ``pred_score``, its nearest-neighbour index
    and its weighting by the bank, computed on every run though the runtime never reads them).
    Returns the names of the outputs dropped."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    names = [o.name for o in g.output]
    missing = [k for k in keep if k not in names]
    if missing:
        raise ValueError(f"ONNX export {path}: no output {missing} (has {names})")
    dropped = [n for n in names if n not in keep]
    kept_outputs = [o for o in g.output if o.name in keep]
    del g.output[:]
    g.output.extend(kept_outputs)
    needed = set(keep)
    nodes = []
    for node in reversed(g.node):
        if any(o in needed for o in node.output):
            nodes.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:  # sub-graphs (If / Loop) read outer names
                for sub in [attr.g, *attr.graphs]:
                    for n in sub.node:
                        needed.update(i for i in n.input if i)
    del g.node[:]
    g.node.extend(reversed(nodes))
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    infos = [v for v in g.value_info if v.name in needed]
    del g.value_info[:]
    g.value_info.extend(infos)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return dropped
