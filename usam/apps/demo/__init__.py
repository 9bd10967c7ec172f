"""The Gradio click demo: upload an ultrasound image, click / draw a box, see the mask, heads and measurements."""

from __future__ import annotations

from .app import DemoBackend, Session, build_app, build_parser, launch, main

__all__ = ["DemoBackend", "Session", "build_app", "build_parser", "launch", "main"]
