"""Segmenting new images with a (tuned) model: prompted masks, the encode-once predictor,
automatic masks and their class labels, and the files ``samtune predict`` / ``samtune segment``
write.

Files: :mod:`.prompted` (prompt checks, :func:`samtune.predict`, prompt files, output files),
:mod:`.predictor` (:class:`Predictor`: ``set_image`` once, then any number of prompts),
:mod:`.automatic_config` (:class:`AutoMaskConfig`), :mod:`.automatic` (the automatic mask
generator), :mod:`.mask_classifiers` (class labels for automatic masks), :mod:`.overlay`
(masks drawn over an image).
"""
