"""Array operations every layer shares (base layer, numpy / OpenCV only, no model):

- :mod:`usam.ops.masks`: the one Dice / IoU of binary masks, largest component, mask -> box, ellipse fit and fill,
  head circumference (from a mask or from the OFD / BPD landmarks).
- :mod:`usam.ops.metrics`: the challenge's official metrics (Dice, Hausdorff, AUC / F1 / MCC, box IoU, MRE).
- :mod:`usam.ops.clicks`: simulated prompts (innermost point, next corrective click, box jitter), used alike by
  training, the interactive benchmark and inference options.
- :mod:`usam.ops.overlay`: the one colour palette and mask / prompt overlays.
"""
