"""The typed schema of ``meta.json`` and ``history.json`` (pydantic v2), checked when a run is opened.

Every field the trainer or the dashboard reads is declared here with its type
and range, so a damaged or hand-edited file is refused at load time, naming
the field, instead of failing later inside a request. Known fields are strict
(``"32"`` is not an int, ``true`` is not 1, NaN is not a mean); unknown fields
are kept as they are, so a newer trainer's extra fields do not lock older
dashboards out.

Importing this module must not import torch (the dashboard opens runs before
torch is loaded), hence :data:`MODEL_NAMES`, a copy of the model registry's
names that a test keeps equal to ``trainer.models.list_models()``.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo
from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = 1
MODEL_NAMES = frozenset({
    "mlp", "lenet5", "simple_cnn", "optimized_cnn", "light_cnn", "deep_cnn", "fast", "resnet18", "vgg11",
    "mobilenet_v3_small", "efficientnet_b0", "resnet50",
})
MAX_INPUT_SIZE = 4096

Name = Annotated[str, Field(min_length=1, max_length=1000)]
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


def _error(kind: str, message: str, **context: Any) -> PydanticCustomError:
    """A validation error with our own wording (``{name}`` placeholders filled from ``context``)."""
    return PydanticCustomError(kind, message, context)


def _hex_digits(low: int, high: int):
    """A lowercase hex string of ``low`` to ``high`` digits (it ends up in URLs and cache keys)."""
    def check(v: str) -> str:
        if not (low <= len(v) <= high and all(c in "0123456789abcdef" for c in v)):
            count = f"{low}" if low == high else f"{low} to {high}"
            raise _error("hex", "should be {count} lowercase hex digits", count=count)
        return v
    return Annotated[str, AfterValidator(check)]


class _Strict(BaseModel):
    """Known fields strict, unknown ones kept (forward compatibility)."""

    model_config = ConfigDict(strict=True, extra="allow")


class Layer(_Strict):
    """An inspectable layer: its dotted module name and output shape without the batch axis."""

    name: Name
    shape: Annotated[list[Positive], Field(min_length=1, max_length=4)]


class DatasetMeta(_Strict):
    """What the run was evaluated on; ``spec`` re-reads it, ``fingerprint`` proves it is the same."""

    name: Name
    fingerprint: _hex_digits(8, 64)
    num_test: Positive
    num_train: Count | None = None
    spec: Name | None = None  # runs written before it existed re-read the dataset by name
    test_subset: Positive | None = None
    train_subset: Positive | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DatasetMeta:
        if self.spec is None:
            self.spec = self.name
        if self.test_subset is not None and self.num_test > self.test_subset:
            raise _error("subset", "num_test {n} exceeds test_subset {s}", n=self.num_test, s=self.test_subset)
        return self


class Timings(_Strict):
    """Seconds and rates shown on the overview; each may be missing."""

    train_seconds: NonNegative | None = None
    wall_seconds: NonNegative | None = None
    train_images_per_s: NonNegative | None = None
    inference_images_per_s: NonNegative | None = None
    inference_latency_ms: NonNegative | None = None


class Provenance(_Strict):
    """How the run was made; only ``device`` is displayed, the rest is kept as written."""

    command: str | None = None
    git_commit: str | None = None
    device: str | None = None
    versions: dict[str, Any] | None = None


class RunMeta(_Strict):
    """``meta.json``. Field order matters: cross-field checks see only the fields declared above them."""

    schema_version: int
    arch: Name
    arch_kwargs: dict[str, Any]
    num_classes: Annotated[int, Field(ge=2, le=100_000)]
    class_names: list[Name]
    in_channels: int
    input_size: Annotated[int, Field(ge=1, le=MAX_INPUT_SIZE)]
    mean: list[Finite]
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]
    dataset: DatasetMeta
    layers: Annotated[list[Layer], Field(min_length=1)]
    gradcam_layer: Name
    seed: int
    weights_sha256: _hex_digits(64, 64)
    num_parameters: Count | None = None
    gflops_per_image: NonNegative | None = None
    test_accuracy: Fraction | None = None
    test_accuracy_tta: Fraction | None = None
    epochs_completed: Count | None = None
    best_epoch: int | None = None  # -1: patience was on but validation never improved
    timings: Timings | None = None
    config: dict[str, Any] | None = None
    provenance: Provenance | None = None

    @field_validator("schema_version")
    @classmethod
    def _supported(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise _error("schema_version", "version {v} is not supported (expected {e})", v=v, e=SCHEMA_VERSION)
        return v

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        if v not in MODEL_NAMES:
            raise _error("arch", "unknown model {v}; known: {known}", v=repr(v), known=", ".join(sorted(MODEL_NAMES)))
        return v

    @field_validator("class_names")
    @classmethod
    def _one_name_per_class(cls, v: list[str], info: ValidationInfo) -> list[str]:
        n = info.data.get("num_classes")
        if n is not None and len(v) != n:
            raise _error("count", "{got} names for num_classes={n}", got=len(v), n=n)
        if len(set(v)) != len(v):
            raise _error("unique", "names must be distinct")
        return v

    @field_validator("in_channels")
    @classmethod
    def _grey_or_rgb(cls, v: int) -> int:
        if v not in (1, 3):
            raise _error("channels", "must be 1 for grey or 3 for RGB, not {v}", v=v)
        return v

    @field_validator("mean", "std")
    @classmethod
    def _one_per_channel(cls, v: list[float], info: ValidationInfo) -> list[float]:
        c = info.data.get("in_channels")
        if c is not None and len(v) != c:
            raise _error("count", "{got} values for in_channels={c}", got=len(v), c=c)
        return v

    @field_validator("layers")
    @classmethod
    def _unique_layers(cls, v: list[Layer]) -> list[Layer]:
        if len({layer.name for layer in v}) != len(v):
            raise _error("unique", "layer names must be distinct")
        return v

    @field_validator("gradcam_layer")
    @classmethod
    def _inspectable(cls, v: str, info: ValidationInfo) -> str:
        names = [layer.name for layer in info.data.get("layers") or []]
        if names and v not in names:
            raise _error("layer", "{v} is not among layers ({names})", v=repr(v), names=", ".join(names))
        return v


class HistoryRecord(_Strict):
    """One epoch of ``history.json``. Losses may be NaN or inf: a run that diverged still has a history."""

    epoch: Count | None = None
    train_loss: float | None = None
    train_acc: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    lr: float | None = None
    seconds: float | None = None
    images_per_s: float | None = None


HISTORY_RECORDS = TypeAdapter(list[HistoryRecord])


def describe(error: ValidationError) -> str:
    """The first problem as ``field.path: message (got VALUE)`` on one line, and how many more there are."""
    problems = error.errors(include_url=False)
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    text = f"{where}: {first['msg']}"
    value = first.get("input")
    shown = repr(value)
    if isinstance(value, (str, int, float, bool)) and len(shown) <= 40 and shown not in text:
        text += f" (got {shown})"
    if len(problems) > 1:
        text += f" (and {len(problems) - 1} more)"
    return text.replace("\n", "\\n")  # one line, even when a name in the file holds a newline
