"""Loaded by every Python process that ``bench.timeline`` starts (this directory is first on its PYTHONPATH)."""

from bench.timeline_marks import install

install()
