"""Scoring methods (heads, neuron groups, blocks), each in its own module behind scoring.base.ScoringMethod."""

from .attribution import GradientAttribution
from .base import LanguageScores, ScoringMethod
from .exact import ExactAblation
from .lahis import Lahis
from .lape import Lape
from .switch import LanguageSwitch

METHODS: dict[str, type[ScoringMethod]] = {
    m.name: m for m in (ExactAblation, GradientAttribution, Lahis, LanguageSwitch, Lape)
}

__all__ = [
    "METHODS",
    "LanguageScores",
    "ScoringMethod",
    "ExactAblation",
    "GradientAttribution",
    "Lahis",
    "LanguageSwitch",
    "Lape",
]
