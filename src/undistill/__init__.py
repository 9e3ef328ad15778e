"""undistill: knowledge-distillation model stealing, its defences and its measurement."""

__version__ = "0.1.0"
