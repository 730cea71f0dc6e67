"""affectflow: face videos and images to validated affect features, splits and models."""

__version__ = "0.1.0"
