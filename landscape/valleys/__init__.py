"""Valleys of the sublevel sets: the valley graph and merge tree, and the search that builds it."""

from .graph import spurious_tolerance

__all__ = ["spurious_tolerance"]
