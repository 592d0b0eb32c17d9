"""Evaluation: the confusion-matrix metric (as mmseg's IoUMetric), the cityscapesscripts cross-check, and
the agreement measures that accelerated and exported models are held to."""
