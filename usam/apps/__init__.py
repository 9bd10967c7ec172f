"""The faces of usam (top layer): the ``usam`` command line (:mod:`usam.apps.cli`) and the Gradio demo
(:mod:`usam.apps.demo`). Nothing in the library imports them."""
