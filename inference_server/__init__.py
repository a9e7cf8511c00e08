"""OFER worker: photo in, ranked FLAME hypotheses out.

Importing this package must stay cheap and must never import torch: the Blender add-on ships
``inference_server.protocol`` and ``inference_server.result`` and imports them with plain numpy.
"""

__version__ = "0.1.0"
