"""Arena: a self-hosted challenge and model-evaluation platform for medical image AI."""

__version__ = "0.1.0"
