"""`mobilevision <command>` (also `python -m mobilevision`): a thin layer over the public functions.

Each command group is a module with `configure_<command>(parser)` and `run_<command>(args) -> int | None`;
the parser binds each with `set_defaults(func=...)`. Bad input (argument errors, ValueError,
FileNotFoundError, ...) is one line on stderr and exit code 2; Python warnings and the library's log records
are one line each.

A command line configures only the subparser of its command (`build_parser(commands=...)`), and the command
modules import torch inside their run functions, so `mobilevision --help` and a cached `choose` stay quick.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from typing import Iterable

from . import common

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("mobilevision.cli.zoo", "list registered models with measured and published params / MACs"),
    "info": ("mobilevision.cli.zoo", "show a model's config and per-stage table"),
    "profile": ("mobilevision.cli.deploy", "params, MACs, activation memory and per-stage table of a model"),
    "bench": ("mobilevision.cli.deploy", "latency / throughput on this machine (eager, compile, onnxruntime, "
                                         "openvino, executorch; --backend all: one table across runtimes)"),
    "export": ("mobilevision.cli.deploy", "export the fused model (ONNX, OpenVINO IR, ExecuTorch) and verify it on "
                                          "its runtime"),
    "quantize": ("mobilevision.cli.deploy", "INT8 static quantization of an exported ONNX graph or OpenVINO IR"),
    "predict": ("mobilevision.cli.infer", "top-k classes of images (files or folders) with a checkpoint or graph"),
    "eval": ("mobilevision.cli.infer", "top-1 / top-5 of a checkpoint or ONNX graph on a data set, as JSON"),
    "train": ("mobilevision.cli.train", "train a model on an ImageFolder directory or the built-in digits set"),
    "pretrain": ("mobilevision.cli.train", "FCMAE masked-autoencoder pre-training of a ConvNeXt V2 encoder (same "
                                           "engine as train)"),
    "choose": ("mobilevision.cli.choose", "the best backbone under a latency budget on this machine: measured latency "
                                          "vs published top-1, Pareto front, cached per device"),
    "lut": ("mobilevision.cli.choose", "MoGA-style per-block latency look-up table: build (measure each block kind "
                                       "once) | predict (a model as the sum of its blocks)"),
    "search": ("mobilevision.cli.choose", "MoGA-style evolutionary search (kernel / expansion / SE per layer) under a "
                                          "latency budget, with the look-up table and a NASWOT proxy"),
    "explain": ("mobilevision.cli.explain", "see inside a model: Mobile-Former attention, feature collapse, stage "
                                            "activations"),
}


class UsageError(Exception):
    """An argument error, reported as one line (argparse would print usage and exit)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise UsageError instead of exiting (for this parser tree only)."""

    def error(self, message: str):
        raise UsageError(message)


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The command tree; every subparser binds its run function as `func`. `commands`: configure only these
    subparsers (the others are listed with their help line but take no arguments); default all."""
    from mobilevision import __version__

    parser = Parser(prog="mobilevision", description="Efficient vision backbones.")
    parser.add_argument("--version", action="version", version=f"mobilevision {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    wanted = set(COMMANDS if commands is None else commands)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name in wanted:  # configuring imports the command's module: only for the command being run
            mod = importlib.import_module(module)
            getattr(mod, f"configure_{name}")(p)
            p.set_defaults(func=getattr(mod, f"run_{name}"))
    return parser


# optional packages -> the extra that installs them
EXTRA_OF_PACKAGE = {"onnx": "deploy", "onnxruntime": "deploy", "onnxscript": "deploy", "pycocotools": "coco",
                    "openvino": "openvino", "nncf": "openvino", "executorch": "executorch", "torchao": "executorch",
                    "litert_torch": "litert", "ai_edge_litert": "litert", "coremltools": "coreml"}


def _command_of(argv: list[str]) -> tuple[str, ...]:
    """The command an argument list runs, as a 1-tuple (empty for none: `--help`, `--version`); the top-level
    parser has no option taking a value, so it is the first token that is no option."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return (first,) if first in COMMANDS else ()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and finalize (`common.finalize`) a command line; UsageError / ValueError on bad input."""
    parser = build_parser(_command_of(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(argv)
    # `predict NAME --checkpoint C IMG...`: argparse gives positionals after an option back as unknown
    if extra and hasattr(args, "inputs") and not any(e.startswith("-") for e in extra):
        args.inputs = list(args.inputs) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return common.finalize(args) if getattr(args, "command", None) else args


def _first_line(text: str, default: str = "") -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else default


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"mobilevision: warning: {_first_line(message, category.__name__)}", file=sys.stderr)


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = _first_line(record.getMessage())
        return f"mobilevision: warning: {msg}" if record.levelno >= logging.WARNING else msg


def _setup_logging() -> None:
    from mobilevision.train.log import StderrHandler  # follows the current sys.stderr

    log = logging.getLogger("mobilevision")
    if not any(isinstance(h, StderrHandler) for h in log.handlers):
        h = StderrHandler()
        h.setFormatter(_OneLine())
        log.addHandler(h)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


def _error(msg: str) -> int:
    print(f"mobilevision: error: {msg}", file=sys.stderr)
    return 2


# commands whose OpenMP threads sleep, not spin, while they wait (OMP_WAIT_POLICY=PASSIVE unless set): spinning
# collapses training next to other jobs, but passive waits slow batch-1 inference 1.7-5x at 2 threads
SLEEPING_OPENMP_COMMANDS = ("train", "pretrain")


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0, 2 for bad input, 130 when interrupted)."""
    if set(_command_of(sys.argv[1:] if argv is None else argv)) & set(SLEEPING_OPENMP_COMMANDS) \
            and "torch" not in sys.modules:  # OpenMP reads the policy once, when torch loads it
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _setup_logging()
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning  # restored when the block ends
        try:
            args = parse_args(argv)
            if not getattr(args, "command", None):
                build_parser(()).print_help()
                return 2
            return int(args.func(args) or 0)
        except SystemExit as exit_:  # --help / --version
            return int(exit_.code or 0) if isinstance(exit_.code, (int, type(None))) else 2
        except UsageError as err:
            return _error(str(err))
        except ModuleNotFoundError as err:
            extra = EXTRA_OF_PACKAGE.get((err.name or "").split(".")[0], "deploy")
            return _error(f"this command needs the package {err.name!r}; install it with "
                          f"pip install 'mobilevision[{extra}]'")
        except (ValueError, OSError, RuntimeError) as err:
            return _error(_first_line(err, type(err).__name__))  # OSError: FileNotFoundError, PermissionError, ...
        except KeyboardInterrupt:
            print("mobilevision: interrupted", file=sys.stderr)
            return 130

