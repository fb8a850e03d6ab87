"""Run output: metrics.jsonl, TensorBoard events, the learning-curve PNG, progress bars / log lines."""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings
from pathlib import Path

logger = logging.getLogger("mobilevision.train")


def _atomic_write(path: Path, write_fn) -> None:
    # imported here: the CLI uses StderrHandler without torch, which models.checkpoint imports
    from ..models.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, write_fn)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (pytest and notebooks swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(enabled: bool) -> None:
    if enabled and not any(isinstance(h, StderrHandler) for h in logger.handlers):
        h = StderrHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(h)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@contextlib.contextmanager
def warnings_to_log():
    """Python warnings raised inside the block become one log line each (no source line, no traceback)."""
    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message).strip()
        logger.warning("warning: %s", text.splitlines()[0] if text else category.__name__)

    with warnings.catch_warnings():  # restores showwarning on exit
        warnings.showwarning = show
        yield


class Progress:
    """A tqdm bar on a terminal; otherwise a plain log line every `every` steps."""

    def __init__(self, total: int, desc: str, enabled: bool, every: int = 50, initial: int = 0) -> None:
        self.enabled, self.every, self.desc, self.total, self.n = enabled, max(1, every), desc, total, initial
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)

    def update(self, **info) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in info.items()}, refresh=False)
            self.bar.update(1)
        elif self.enabled and (self.n % self.every == 0 or self.n == self.total):
            text = " ".join(f"{k}={v:.4g}" for k, v in info.items())
            logger.info("%s step %d/%d %s", self.desc, self.n, self.total, text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunWriter:
    """Rank 0's writer for the run directory. Rows carry the 1-based `epoch`; `metric` (e.g. "top1")
    names the `val_` / `ema_` curve of the right-hand plot ("" = losses only)."""

    def __init__(self, out: Path, resume_epoch: int = 0, metric: str = "") -> None:
        self.metric = metric
        self.out = Path(out)
        self.metrics_path = self.out / "metrics.jsonl"
        self.rows: list[dict] = []
        if self.metrics_path.exists():
            # keep only epochs finished before the resume point (a kill after the metrics line but
            # before the checkpoint must not leave a duplicate)
            rows = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
            self.rows = [row for row in rows if row["epoch"] <= resume_epoch]
            self._write_metrics()
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=resume_epoch)
        except ImportError:  # tensorboard is optional at run time
            logger.warning("tensorboard is not installed; no event files are written")

    def _write_metrics(self) -> None:
        text = "".join(json.dumps(r) + "\n" for r in self.rows)
        _atomic_write(self.metrics_path, lambda tmp: Path(tmp).write_text(text))

    def epoch(self, row: dict) -> None:
        self.rows.append(row)
        self._write_metrics()
        if self.tb is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["epoch"])
            self.tb.flush()
        self.plot()

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ep = [r["epoch"] for r in self.rows]
        fig, axes = plt.subplots(1, 2 if self.metric else 1, figsize=(10 if self.metric else 5, 4), squeeze=False)
        for ax, keys in zip(axes[0], (("train_loss", "val_loss"), (f"val_{self.metric}", f"ema_{self.metric}"))):
            for key in keys:
                if any(r.get(key) is not None for r in self.rows):
                    ax.plot(ep, [r.get(key) for r in self.rows], label=key.replace("_", " "))
            ax.set_xlabel("epoch")
            ax.legend()
        fig.tight_layout()
        _atomic_write(self.out / "curves.png", lambda tmp: fig.savefig(tmp, format="png", dpi=80))
        plt.close(fig)

    def write_json(self, name: str, data: dict) -> None:
        text = json.dumps(data, indent=2)
        _atomic_write(self.out / name, lambda tmp: Path(tmp).write_text(text))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
