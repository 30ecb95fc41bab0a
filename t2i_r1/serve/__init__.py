"""``t2i-r1 serve``: a local web page to try a model (prompt in, streamed plan and images out).

Split in three so the logic is testable without a browser or gradio:
- ``handler.py``: pure Python. Validates a request, streams the plans as they are written, draws the
  images, writes the download (a zip of PNGs and a JSON of prompt, plans and settings); every failure
  becomes a message, never an exception that reaches the server.
- ``app.py``: the Gradio Blocks page around a handler (gradio is imported only when a page is built;
  it is the optional ``demo`` extra).
- ``t2i_r1.cli.serve``: the command's arguments, model loading and ``launch``.

Importing this package imports neither torch nor gradio.
"""

from __future__ import annotations

from t2i_r1.bundled import BUNDLED_MODELS

DEFAULT_MODEL = BUNDLED_MODELS["shapeworld"]
"""The bundled small checkpoint that ``t2i-r1 serve`` uses when ``--model`` is not given.

Until the trained ShapeWorld checkpoint is bundled there, the command falls back to a tiny random
model and says so on the page (see ``t2i_r1.cli.serve.load_model``).
"""
