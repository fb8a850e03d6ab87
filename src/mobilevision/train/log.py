"""Run output: metrics.jsonl, TensorBoard events, the learning-curve PNG, progress bars / log lines."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from ..models.checkpoint import atomic_write_bytes

logger = logging.getLogger("mobilevision.train")


def setup_logging(enabled: bool) -> None:
    if enabled and not logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(h)
        logger.setLevel(logging.INFO)
        logger.propagate = False


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
    """Rank 0's writer for the run directory."""

    def __init__(self, out: Path, resume_epoch: int = 0) -> None:
        self.out = Path(out)
        self.metrics_path = self.out / "metrics.jsonl"
        self.rows: list[dict] = []
        if self.metrics_path.exists():
            # keep only epochs finished before the resume point (a kill after the metrics line but
            # before the checkpoint must not leave a duplicate)
            for line in self.metrics_path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    if row["epoch"] < resume_epoch:
                        self.rows.append(row)
            self._write_metrics()
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=resume_epoch)
        except ImportError:  # tensorboard is optional at run time
            logger.warning("tensorboard is not installed; no event files are written")

    def _write_metrics(self) -> None:
        text = "".join(json.dumps(r) + "\n" for r in self.rows)
        atomic_write_bytes(self.metrics_path, lambda tmp: Path(tmp).write_text(text))

    def epoch(self, row: dict) -> None:
        self.rows.append(row)
        self._write_metrics()
        if self.tb is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and value is not None:
                    self.tb.add_scalar(key, value, row["epoch"])
            self.tb.flush()
        self.plot()

    def scalar(self, key: str, value: float, step: int) -> None:
        if self.tb is not None:
            self.tb.add_scalar(key, value, step)

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ep = [r["epoch"] + 1 for r in self.rows]
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        a.plot(ep, [r["train_loss"] for r in self.rows], label="train loss")
        a.plot(ep, [r["val_loss"] for r in self.rows], label="val loss")
        a.set_xlabel("epoch")
        a.legend()
        b.plot(ep, [r["val_top1"] for r in self.rows], label="val top-1")
        if any(r.get("ema_top1") is not None for r in self.rows):
            b.plot(ep, [r.get("ema_top1") for r in self.rows], label="EMA top-1")
        b.set_xlabel("epoch")
        b.set_ylabel("%")
        b.legend()
        fig.tight_layout()
        atomic_write_bytes(self.out / "curves.png", lambda tmp: fig.savefig(tmp, format="png", dpi=80))
        plt.close(fig)

    def write_json(self, name: str, data: dict) -> None:
        text = json.dumps(data, indent=2)
        atomic_write_bytes(self.out / name, lambda tmp: Path(tmp).write_text(text))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
