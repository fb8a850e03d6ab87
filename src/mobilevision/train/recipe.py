"""Training recipes: one dataclass of every hyper-parameter, filled from a shipped or user YAML file.

`load_recipe("convnext")` reads `train/recipes/convnext.yaml`; `load_recipe("my.yaml")` reads a file.
Unknown keys are an error naming the key (and the closest field). `apply_overrides` takes
`key=value` strings (values parsed as YAML, so `0.1`, `true`, `[160, 192]`, `null` work);
`task_options.KEY=VALUE` sets one option of the recipe's task (validated by the task, see `tasks/`).
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

OPTIMIZERS = ("adamw", "sgd", "rmsproptf", "rmsprop")
SCHEDULES = ("cosine", "step", "constant")


@dataclass
class Recipe:
    """All knobs of a run. Learning rates are at `lr_base_batch` images per step when that is set
    (linear scaling to the actual global batch), else absolute."""

    name: str = "custom"
    description: str = ""
    source: str = ""  # where the published values come from
    task: str = "classify"  # see mobilevision.tasks.TASKS
    task_options: dict = field(default_factory=dict)  # the task's own knobs (e.g. FCMAE mask_ratio), validated by it
    # model
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    model_kwargs: dict = field(default_factory=dict)  # extra create_model overrides (e.g. layer-scale init)
    init_backbone: str | None = None  # a classifier checkpoint of a task model's backbone (its ImageNet weights)
    # data
    input_size: int | None = None  # training/eval resolution; None = the model's default
    batch_size: int = 128  # per process, at the base resolution
    eval_batch_size: int | None = None
    workers: int = 0
    verify_images: bool = True
    multi_scale: bool = False
    scales: list = field(default_factory=lambda: [160, 192, 256, 288, 320])
    base_scale: int | None = None  # resolution at which batch_size holds; None = largest scale
    # augmentation
    scale: list = field(default_factory=lambda: [0.08, 1.0])
    ratio: list = field(default_factory=lambda: [0.75, 1.3333333])
    hflip: float = 0.5
    train_interpolation: str | None = None  # None = the model's interpolation
    rand_augment: str | None = None  # timm string, e.g. rand-m9-mstd0.5-inc1
    auto_augment: str | None = None  # torchvision AutoAugment policy: imagenet | cifar10 | svhn
    color_jitter: float = 0.0
    random_erase: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1
    crop_pct: float | None = None  # eval crop; None = the model's
    # optimisation
    epochs: int = 10
    optimizer: str = "adamw"
    lr: float = 1e-3
    lr_base_batch: int | None = None
    weight_decay: float = 0.05
    filter_bias_and_bn: bool = True  # no decay on 1-D params and model.no_weight_decay() names
    layer_decay: float | None = None  # layer-wise lr decay (BEiT / ConvNeXt fine-tuning): lr x decay^(depth from top)
    backbone_lr_scale: float = 1.0  # task models: lr x this for `backbone.*` parameters (DETR: 1e-5 / 1e-4 = 0.1)
    momentum: float = 0.9
    nesterov: bool = False
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    rmsprop_alpha: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None  # overrides warmup_epochs
    warmup_lr_ratio: float = 0.0  # lr at step 0 as a fraction of lr
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    decay_epochs: float = 1.0  # step schedule: multiply by decay_rate every decay_epochs
    decay_rate: float = 0.97
    clip_grad: float | None = None
    accum_steps: int = 1  # batches whose gradients are summed before one optimizer step
    ema: bool = False
    ema_decay: float = 0.9999
    ema_warmup: bool = False  # decay ramps up as 1 - (1 + updates) ** -2/3 until it reaches ema_decay (timm)
    # runtime
    threads: int | None = None  # CPU threads per process; 0 = one per core (shared among local ranks); None = torch's
    amp: bool = True  # bf16 autocast on CPU, fp16 (GradScaler) or amp_dtype on GPU
    amp_dtype: str | None = None
    compile: bool = False
    sync_bn: bool = False
    checkpoint_every: int = 200  # steps between mid-epoch checkpoints (0 = epoch ends only)
    log_every: int = 50
    seed: int = 0
    deterministic: bool = False

    def validate(self) -> "Recipe":
        """Type and range checks; returns self."""
        check_types(self, "recipe field")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        for name in ("epochs", "batch_size", "accum_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("drop_rate", "drop_path_rate", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("hflip", "random_erase", "mix_prob", "switch_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.input_size is not None and self.input_size < 8:
            raise ValueError(f"input_size must be >= 8 pixels, got {self.input_size}")
        if not 0 < self.backbone_lr_scale <= 1:
            raise ValueError(f"backbone_lr_scale must be in (0, 1], got {self.backbone_lr_scale}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1] (or null), got {self.layer_decay}")
        if self.ema and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.amp_dtype not in (None, "bfloat16", "float16"):
            raise ValueError(f"amp_dtype {self.amp_dtype!r} is not one of bfloat16, float16 (or null)")
        if len(self.scale) != 2 or len(self.ratio) != 2 or len(self.betas) != 2:
            raise ValueError("scale, ratio and betas each take two numbers")
        if self.auto_augment not in (None, "imagenet", "cifar10", "svhn"):
            raise ValueError(f"auto_augment {self.auto_augment!r} is not one of imagenet, cifar10, svhn (or null)")
        if self.multi_scale and not self.scales:
            raise ValueError("multi_scale needs a non-empty scales list")
        _check_numbers("scales", self.scales, whole=True, low=8)
        for name in ("scale", "ratio", "betas"):
            _check_numbers(name, getattr(self, name))
        if self.threads is not None and self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = one per core) or null, got {self.threads}")
        from mobilevision.tasks import task_class  # late: tasks import the training helpers

        self.task_options = task_class(self.task).check_options(self.task_options)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_types(obj: Any, what: str) -> None:
    """Check (and coerce int -> float) every field of a dataclass instance against its annotation; ValueError
    naming the field otherwise. `what` starts the message ("recipe field", "task_options field")."""
    kinds = {"int": int, "float": float, "str": str, "bool": bool, "list": (list, tuple), "dict": dict}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        want = f.type if isinstance(f.type, str) else str(f.type)
        if v is None:
            if "None" not in want:
                raise ValueError(f"{what} {f.name!r} cannot be null")
            continue
        base = want.split("|")[0].strip()
        if base == "float" and isinstance(v, str):  # YAML 1.1 reads "3e-3" (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                pass
        if base == "float" and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        setattr(obj, f.name, v)
        kind = kinds.get(base)
        if (kind is not None and not isinstance(v, kind)) or (base in ("int", "float") and isinstance(v, bool)):
            raise ValueError(f"{what} {f.name!r} must be {want}, got {v!r}")


def _check_numbers(name: str, values: list, whole: bool = False, low: float | None = None) -> None:
    kind = "integers" if whole else "numbers"
    for v in values:
        bad = isinstance(v, bool) or not isinstance(v, int if whole else (int, float))
        if bad or (low is not None and v < low):
            limit = f" >= {low}" if low is not None else ""
            raise ValueError(f"recipe field {name!r} takes a list of {kind}{limit}, got {v!r} in {list(values)!r}")


def recipe_names() -> list[str]:
    """Names of the recipes shipped with the package."""
    d = resources.files("mobilevision.train").joinpath("recipes")
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".yaml"))


def recipe_from_dict(values: dict[str, Any]) -> Recipe:
    if not isinstance(values, dict):
        raise ValueError(f"a recipe must be a mapping of fields, got {type(values).__name__}")
    fields = [f.name for f in dataclasses.fields(Recipe)]
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"unknown recipe key {key!r}{hint}")
    return Recipe(**values).validate()


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name, or a YAML file by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"recipe file not found: {p}")
        text = p.read_text()
    else:
        names = recipe_names()
        if str(name_or_path) not in names:
            raise ValueError(f"unknown recipe {str(name_or_path)!r}; shipped recipes: {', '.join(names)} "
                             "(or pass a .yaml file)")
        text = resources.files("mobilevision.train").joinpath("recipes", f"{name_or_path}.yaml").read_text()
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"recipe {name_or_path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return recipe_from_dict(values)


def apply_overrides(recipe: Recipe, pairs: list[str] | None = None, **values: Any) -> Recipe:
    """A copy of `recipe` with `key=value` strings and keyword values (None keywords ignored) applied."""
    merged = recipe.to_dict()
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ValueError(f"--set {key}: cannot parse value {raw!r}") from None
        if key.startswith("task_options."):
            merged["task_options"] = {**merged["task_options"], key.split(".", 1)[1]: value}
        else:
            merged[key] = value  # an unknown key is recipe_from_dict's error
    merged.update({key: v for key, v in values.items() if v is not None})
    return recipe_from_dict(merged)


# family -> the shipped recipe of its paper (families without one train with `generic`)
PAPER_RECIPES = {
    "mobilenetv2": "mobilenetv2", "mobilenetv3": "mobilenetv3", "efficientnet": "efficientnet", "moga": "moga",
    "mobilevit": "mobilevit", "mobileformer": "mobileformer", "poolformer": "poolformer",
    "metaformer": "poolformer", "convnext": "convnext", "convnextv2": "convnext",
}


# Built-in data sets and the task each one serves; task-model families and their task.
BUILTIN_DATA = {"digits": "classify", "digits-photos": "classify", "digits-detect": "detect",
                "digits-segment": "segment"}
TASK_OF_FAMILY = {"ssdlite": "detect", "mobileformer_detr": "detect", "deeplabv3": "segment", "lraspp": "segment",
                  "fpn": "segment"}
TASK_RECIPES = {  # task -> (recipe on its built-in set, recipe for a MobileViT backbone, recipe otherwise)
    "detect": ("digits_detect", "ssdlite_mobilevit", "ssdlite_torchvision"),
    "segment": ("digits_segment", "deeplabv3_mobilevit", "deeplabv3_torchvision"),
}


def infer_task(model_name: str, data: str) -> str:
    """The task a run without `--task` means: the model's (a detector or segmenter preset), else the
    built-in data set's, else classification."""
    from mobilevision.models.registry import get_config

    family = get_config(model_name).family
    if family in TASK_OF_FAMILY:
        return TASK_OF_FAMILY[family]
    return BUILTIN_DATA.get(data, "classify")


def default_recipe(model_name: str, data: str, task: str = "classify") -> tuple[str, str]:
    """(recipe name, why) for a run that names no recipe: the built-in set's own recipe (`digits`,
    `fcmae_digits`, `digits_detect`, `digits_segment`), else the paper recipe of the model's family (MobileViT's
    SSDLite / DeepLabv3 or torchvision's for task models; `fcmae` for pre-training), else `generic`."""
    from mobilevision.models.registry import get_config

    builtin = data in BUILTIN_DATA
    if task == "fcmae":
        return ("fcmae_digits", "the built-in digits set") if builtin else ("fcmae", "the paper recipe")
    if task in TASK_RECIPES:
        on_builtin, mobilevit, other = TASK_RECIPES[task]
        if builtin:
            return on_builtin, f"the built-in {data} set"
        if "mobilevit" in model_name:
            return mobilevit, "the MobileViT paper's recipe"
        return other, "torchvision's reference recipe"
    if builtin:
        return ("digits_photos" if data == "digits-photos" else "digits"), f"the built-in {data} set"
    family = get_config(model_name).family
    if family in PAPER_RECIPES:
        return PAPER_RECIPES[family], f"the {family} paper recipe"
    return "generic", f"no paper recipe is shipped for the {family} family"
