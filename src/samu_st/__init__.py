"""samu-st: cross-lingual transfer for low-resource speech translation and recognition."""

__version__ = "0.1.0"
