"""Rendering of plans and drift reports as text, Markdown (jinja2) and JSON. Pure."""
