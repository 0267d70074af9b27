"""edgeq.device: the part of edgeq that runs on the board.

May import only the standard library, numpy, psutil and a TFLite runtime
(ai-edge-litert, tflite-runtime, or TensorFlow's interpreter as a last resort).
Never anything from edgeq.host, never TensorFlow at import time. The directory
can be copied to a Raspberry Pi as is and run with `python -m edgeq.device`.
"""
from __future__ import annotations

__version__ = "0.1.0"
