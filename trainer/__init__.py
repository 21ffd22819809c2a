"""xai-dashboard trainer: dataset -> model zoo -> training -> run directory."""
__version__ = "0.1.0"
