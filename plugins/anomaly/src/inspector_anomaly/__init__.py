"""Inspector anomaly models: train with anomalib from good parts, run with onnxruntime.

The runtime side (:mod:`inspector_anomaly.detector`) needs numpy, OpenCV and onnxruntime
only; training (:mod:`inspector_anomaly.training`, ``inspector train anomaly``) needs the
``[train]`` extra (anomalib, torch).
"""

__version__ = "0.1.0"
