"""samtune inside annotation tools: servers that answer a tool's prompts with the tuned model.

- :mod:`samtune.serve.label_studio`: a Label Studio ML backend (``samtune serve label-studio``).
"""

from __future__ import annotations

from .label_studio import LabelStudioBackend, make_server

__all__ = ["LabelStudioBackend", "make_server"]
