"""Condvest workbench: the package behind the notebooks. Importing it has no side effects."""

from condvest.errors import CondvestError
from condvest.settings import HttpLimits, Retention, Secret, Settings

__all__ = ["CondvestError", "HttpLimits", "Retention", "Secret", "Settings"]
__version__ = "0.1.0"
