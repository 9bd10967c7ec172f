"""Array operations every layer shares (base layer, numpy / OpenCV only, no model):

- :mod:`usam.ops.clicks`: simulated prompts (innermost point, next corrective click, box of a mask, box jitter),
  used alike by training, the interactive benchmark and inference options.
- :mod:`usam.ops.overlay`: the one colour palette and mask / prompt overlays.
"""
