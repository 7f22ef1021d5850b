"""The peak RSS an onnxruntime session adds, measured in a fresh process (its VmHWM is its own).

Shared by the anomaly benches (anomaly_variants.py, anomaly_search_chunks.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_PROBE = r"""
import sys, json, numpy as np, onnxruntime as ort
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024
a = json.loads(sys.argv[1])
base = hwm()
o = ort.SessionOptions(); o.intra_op_num_threads = a['threads']; o.enable_mem_pattern = a['mem_pattern']
s = ort.InferenceSession(a['path'], sess_options=o, providers=['CPUExecutionProvider'])
x = np.random.default_rng(0).random((1, 3, a['height'], a['width']), dtype=np.float32)
for _ in range(5):
    s.run(a['outputs'], {s.get_inputs()[0].name: x})
print(json.dumps({'base_mb': base, 'peak_mb': hwm()}))
"""


def session_peak_mb(
    path: Path,
    *,
    height: int = 256,
    width: int = 256,
    threads: int = 1,
    mem_pattern: bool = False,
    outputs: list[str] | None = None,
) -> float:
    """MB that loading ``path`` and five runs on a random input add to a fresh process's peak RSS."""
    args = {
        "path": str(path),
        "height": height,
        "width": width,
        "threads": threads,
        "mem_pattern": mem_pattern,
        "outputs": outputs,
    }
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)], capture_output=True, text=True, check=True
    ).stdout
    d = json.loads(out)
    return float(d["peak_mb"] - d["base_mb"])
