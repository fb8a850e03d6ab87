"""Registers the task presets (ssdlite*) with the model registry, which imports every module here."""
import mobilevision.tasks.detect  # noqa: F401
