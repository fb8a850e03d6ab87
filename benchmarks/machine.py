"""The machine a benchmark ran on, recorded with its figures (the helper lives in the package now)."""
from mobilevision.deploy.machine import cpu_info

__all__ = ["cpu_info"]
