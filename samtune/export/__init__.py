"""Exporting a tuned model: :mod:`.formats` (:func:`export_adapter` to transformers, Meta's
original format, peft, a hub folder, ONNX, annotation tools), :mod:`.card` (the model card with
its metrics), :mod:`.onnx` (encoder and decoder graphs, checked against the PyTorch model),
:mod:`.tools` (ONNX with X-AnyLabeling's, samexporter's or osam's conventions) and :mod:`.cvat`
(a CVAT serverless interactor)."""
