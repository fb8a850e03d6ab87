"""`mobilevision <command>`: a thin layer over the public functions.

Each command lives in a module that exposes `configure(parser)` and `run(args) -> int | None`;
ValueError / FileNotFoundError / RuntimeError become one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("mobilevision.cli.zoo", "list registered models with measured and published params / MACs"),
    "info": ("mobilevision.cli.zoo", "show a model's config and per-stage table"),
    "profile": ("mobilevision.cli.deploy", "params, MACs, activation memory and per-stage table of a model"),
    "bench": ("mobilevision.cli.deploy", "latency / throughput on this machine (eager, compile, onnxruntime)"),
    "export": ("mobilevision.cli.deploy", "export the fused model to ONNX and verify it with onnxruntime"),
    "quantize": ("mobilevision.cli.deploy", "INT8 static quantization of an exported ONNX graph"),
    "predict": ("mobilevision.cli.deploy", "top-5 classes of images with a trained checkpoint"),
    "train": ("mobilevision.cli.train", "train a model on an ImageFolder directory or the built-in digits set"),
    "eval": ("mobilevision.cli.train", "top-1 / top-5 of a checkpoint on a data set, written as JSON"),
    "pretrain": ("mobilevision.cli.train", "FCMAE masked-autoencoder pre-training of a ConvNeXt V2 encoder"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobilevision", description="Efficient vision backbones.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        configure = getattr(mod, f"configure_{name}", None) or mod.configure
        configure(p)
        p.set_defaults(_module=module, _name=name)
    return parser


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, as for every other bad input
        raise _ArgumentError(message)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser.error = _Parser.error  # type: ignore[method-assign]
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        mod = importlib.import_module(args._module)
        run = getattr(mod, f"run_{args._name}", None) or mod.run
        code = run(args)
        return int(code or 0)
    except _ArgumentError as err:
        print(f"mobilevision: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        print(f"mobilevision: error: this command needs the package {err.name!r}; install the extras with "
              "pip install 'mobilevision[deploy]'", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError, NotADirectoryError, IsADirectoryError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"mobilevision: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mobilevision: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
