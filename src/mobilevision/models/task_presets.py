"""Registers the task presets (ssdlite*, deeplabv3_*, lraspp_*, fpn_*) with the model registry, which imports
every module here."""
import mobilevision.tasks.detect  # noqa: F401
import mobilevision.tasks.segment  # noqa: F401
