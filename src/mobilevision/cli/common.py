"""One dialect for every subcommand: the shared arguments and their spellings.

- model:  positional `NAME`, also `--model NAME` (commands over several models take several)
- output: `--output PATH`, alias `--out`
- batch:  `--batch-size N`, alias `--batch` (bench: a comma list, `1,8`, is a sweep)
- size:   `--input-size N | H W | H,W`, alias `--size` (bench: repeat it for a sweep; its old `--size
          224,256` form stays a sweep of squares, as `--batch 1,8` is)
- `--num-classes N` where a checkpoint is loaded, `--json` where a command prints a report

`finalize(args)` runs after parsing (from `mobilevision.cli.main`): it merges the two model spellings, turns
the size tokens into (H, W) and checks the output path, so a mistake is one line and exit code 2.
"""
from __future__ import annotations

import argparse
from pathlib import Path

SIZE_METAVAR = "N | H W | H,W"


def add_model(p: argparse.ArgumentParser, *, multiple: bool = False, required: bool = True,
              help: str = "registered model name (see `mobilevision models`)") -> None:
    """The model as positional NAME and as --model NAME (both land in `args.model`)."""
    p.add_argument("model_pos", nargs="*" if multiple else "?", metavar="NAME", help=help)
    p.add_argument("--model", dest="model_opt", metavar="NAME", action="append" if multiple else "store",
                   help="the same as NAME" + (" (repeatable)" if multiple else ""))
    p.set_defaults(_model_spec=(multiple, required))


def add_output(p: argparse.ArgumentParser, *, kind: str = "file", default: str | None = None,
               required: bool = False, help: str = "output path") -> None:
    """--output PATH (alias --out). `kind` "dir" refuses an existing file, "file" an existing directory."""
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    p.add_argument("--output", "--out", dest="output", metavar="PATH", default=default, required=required,
                   help=help)
    p.set_defaults(_output_kind=kind)


def add_batch_size(p: argparse.ArgumentParser, *, default=None, sweep: bool = False,
                   help: str = "batch size") -> None:
    """--batch-size N (alias --batch); with `sweep` a comma-separated list (kept as the string)."""
    p.add_argument("--batch-size", "--batch", dest="batch_size", metavar="N,M,..." if sweep else "N",
                   type=str if sweep else int, default=default, help=help)


def add_input_size(p: argparse.ArgumentParser, *, sweep: bool = False,
                   help: str = "input size (default: the model's or the checkpoint's)") -> None:
    """--input-size N | H W | H,W (alias --size): `args.input_size` is (H, W), or a list of them with `sweep`."""
    p.add_argument("--input-size", "--size", dest="input_size", nargs="+", metavar="SIZE",
                   action="append" if sweep else "store", default=None,
                   help=f"{help}; {SIZE_METAVAR}" + ("; repeat for a sweep" if sweep else ""))
    p.set_defaults(_size_sweep=sweep)


def add_num_classes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-classes", type=_num_classes, default=None, metavar="N",
                   help="classes of the model's head; needed for bare weights without config.json, and "
                        "asks for a new N-class head if the checkpoint's differs")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")


def _num_classes(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--num-classes must be an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"--num-classes must be >= 1, got {v}")
    return v


def parse_size(tokens: list[str] | tuple[str, ...] | str) -> tuple[int, int]:
    """`N`, `H W` or `H,W` (as tokens) -> (H, W) in pixels; ValueError naming the accepted forms."""
    if isinstance(tokens, str):
        tokens = [tokens]
    parts = [v for t in tokens for v in str(t).replace("x", ",").split(",") if v.strip()]
    try:
        vals = [int(v) for v in parts]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2) or len(parts) != len(vals):
        raise ValueError(f"--input-size takes {SIZE_METAVAR}, got {' '.join(map(str, tokens))!r}")
    h, w = (vals[0], vals[0]) if len(vals) == 1 else vals
    if h < 1 or w < 1:
        raise ValueError(f"--input-size must be positive, got {h} {w}")
    return h, w


def _sweep_sizes(groups: list[list[str]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for tokens in groups:
        if len(tokens) == 1 and tokens[0].count(",") >= 1:  # the old sweep form: 224,256 = two squares
            out += [parse_size(v) for v in tokens[0].split(",") if v.strip()]
        else:
            out.append(parse_size(tokens))
    return list(dict.fromkeys(out))


def finalize(args: argparse.Namespace) -> argparse.Namespace:
    """Merge and check the shared arguments after parsing (see the module docstring). ValueError on misuse.

    A command with its own positional layout sets `_finalize` (a function of args) with set_defaults."""
    hook = getattr(args, "_finalize", None)
    if hook is not None:
        hook(args)
    spec = getattr(args, "_model_spec", None)
    if spec is not None:
        multiple, required = spec
        pos, opt = args.model_pos, args.model_opt
        del args.model_pos, args.model_opt
        if multiple:
            args.model = list(pos or []) + list(opt or [])
        else:
            if pos and opt and pos != opt:
                raise ValueError(f"two different models given: {pos!r} and --model {opt!r}")
            args.model = pos or opt or model_of_checkpoint(getattr(args, "checkpoint", None))
        if required and not args.model:
            raise ValueError("give a model: NAME or --model NAME")
    elif hasattr(args, "model") and args.model is None:  # commands with their own layout
        args.model = model_of_checkpoint(getattr(args, "checkpoint", None))
    batch = getattr(args, "batch_size", None)
    if isinstance(batch, int) and batch < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch} (--batch-size)")
    if getattr(args, "input_size", None) is not None:
        args.input_size = _sweep_sizes(args.input_size) if args._size_sweep else parse_size(args.input_size)
    kind = getattr(args, "_output_kind", None)
    out = getattr(args, "output", None)
    if kind and out:
        check_output(out, kind)
    return args


def model_of_checkpoint(checkpoint: str | None) -> str | None:
    """The model name a saved checkpoint's config.json records (so `eval --checkpoint runs/x/best` needs no
    NAME), or None (no checkpoint, an ONNX graph, no config, no name in it)."""
    if not checkpoint or str(checkpoint).endswith(".onnx"):
        return None
    from mobilevision.models.checkpoint import read_config

    cfg = read_config(checkpoint) if Path(checkpoint).expanduser().exists() else None
    name = (cfg or {}).get("model")
    return name if isinstance(name, str) else None


def check_output(path: str, kind: str) -> Path:
    """ValueError when an output path names the wrong kind of thing (an existing file for a directory output
    or the other way round)."""
    p = Path(path).expanduser()
    if kind == "dir" and p.exists() and not p.is_dir():
        raise ValueError(f"--output {path} is an existing file; give a directory (new or existing)")
    if kind == "file" and p.is_dir():
        raise ValueError(f"--output {path} is a directory; give a file name")
    if kind == "file" and p.parent.exists() and not p.parent.is_dir():
        raise ValueError(f"--output {path}: {p.parent} is a file, not a directory")
    return p


def square(size: tuple[int, int] | None, what: str = "this command") -> int | None:
    """The side of a square (H, W), or None; ValueError for a non-square size where only squares work."""
    if size is None:
        return None
    h, w = size
    if h != w:
        raise ValueError(f"{what} takes a square --input-size, got {h} {w}")
    return h


def or_dash(value: float | None, spec: str, scale: float = 1.0) -> str:
    """`value / scale` formatted with `spec`, or "-" for a figure that is missing (report tables)."""
    return "-" if value is None else format(value / scale, spec)


def write_text(path: str | Path, text: str) -> Path:
    """`models.checkpoint.atomic_write_text`, imported when called (this module loads without torch)."""
    from mobilevision.models.checkpoint import atomic_write_text

    return atomic_write_text(path, text)
