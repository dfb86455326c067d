"""Exporting a tuned model: :mod:`.formats` (:func:`export_adapter` to transformers, Meta's
original format, peft, a hub folder, ONNX), :mod:`.card` (the model card with its metrics) and
:mod:`.onnx` (encoder and decoder graphs, checked against the PyTorch model)."""
