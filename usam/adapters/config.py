"""What an adapter is: :class:`AdapterConfig` (its ``config.json``) and :class:`DecoderSettings`.

``config.json``::

    library_name, usam_version, name
    backbone        {name, checksum, input_size}: the exact weights the adapter was trained on
    tasks           {task_id: {kind, num_classes, class_names}}
    lora            encoder LoRA settings (LoraSettings) or null
    decoder         tuned prompt decoder {lora, train, box_prompts} or null
    preprocessing   {input_size, resize, pad}: checked on load against what usam does for the backbone
    training        how it was trained (free-form record)
    head_options    per-task inference options (usam.heads.refine)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import AdapterError, ConfigError, short_repr
from ..heads.refine import check_head_options
from ..tasks.registry import KINDS
from ..tasks.spec import TaskSpec
from ..version import __version__
from .lora import DECODER_TARGETS, LoraSettings
from .settings import Invalid, boolean, build_section, check, is_int, one_of, optional

#: Decoder parameters trained in full when a decoder is tuned (small: about 0.7M of the decoder's 4M).
DEFAULT_DECODER_TRAIN = (
    "prompt_encoder.point_embeddings",
    "prompt_encoder.not_a_point_embed",
    "mask_decoder.iou_token",
    "mask_decoder.mask_tokens",
    "mask_decoder.output_hypernetworks_mlps",
    "mask_decoder.iou_prediction_head",
)
#: An adapter's name: it names LoRA modules, Hub commits and folders, so a plain identifier (no '.', no '/').
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$")
#: Most classes (or points) a task may declare: the heads grow with it (the automatic head runs once per class).
MAX_CLASSES = 256


def preprocessing(input_size: int) -> dict:
    """The ``preprocessing`` block of ``config.json``: what every usam backbone does to an image."""
    return {"input_size": int(input_size), "resize": "longest side", "pad": "bottom/right zeros"}


def check_adapter_name(name, what: str = "name") -> str:
    """Raise :class:`ConfigError` unless ``name`` is a plain adapter name (letters, digits, '_' and '-')."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{what} {short_repr(name)} must be a plain adapter name: 1-100 letters, digits, '_' or '-' "
                          "(no '.', '/' or spaces)")
    return name


# --------------------------------------------------------------------------------------------- decoder
def _decoder_lora(v):
    if v is not None and not isinstance(v, dict):
        raise Invalid("must be a mapping or null")
    return None if v is None else LoraSettings.from_dict(v, DECODER_TARGETS, "decoder.lora")


def _click_window(v):
    if not is_int(v) or v < 2:
        raise Invalid("must be an integer >= 2 (the first click and the latest ones)")
    return v


def _click_merge(v):
    if not is_int(v) or v < 1:
        raise Invalid("must be an integer >= 1 (clicks answered whole before merging)")
    return int(v)


#: the widest zoomed view ``decoder.click_zoom`` may ask for, in multiples of the object's extent
ZOOM_EXPAND_LIMIT = 8.0


def _click_zoom(v) -> tuple[int, float]:
    """``decoder.click_zoom``: ``{"after": N, "expand": E}``, N >= 1 clicks answered on the whole image first, the
    view E (1 < E <= :data:`ZOOM_EXPAND_LIMIT`) times the object's extent; raises :class:`Invalid`."""
    if isinstance(v, (list, tuple)) and len(v) == 2:  # the in-memory form
        v = {"after": v[0], "expand": v[1]}
    if not isinstance(v, dict) or set(v) != {"after", "expand"}:
        raise Invalid('must be {"after": N, "expand": E} (zoom in from click N + 1 on, on a view E times the '
                      "object's extent)")
    after, expand = v["after"], v["expand"]
    if not is_int(after) or after < 1:
        raise Invalid(f"after must be an integer >= 1 (clicks answered on the whole image first), got {after!r};")
    if (isinstance(expand, bool) or not isinstance(expand, (int, float))
            or not 1.0 < expand <= ZOOM_EXPAND_LIMIT):  # NaN fails the comparison
        raise Invalid(f"expand must be a number in (1, {ZOOM_EXPAND_LIMIT:g}] (the view's side over the object's "
                      f"extent), got {expand!r};")
    return int(after), float(expand)


#: the largest coefficient of a fitted quality map (``decoder.quality_fit``): fitted ones are near 1; a larger one
#: is a broken fit or a typo, and could overflow float32
QUALITY_FIT_LIMIT = 1000.0


def _quality_fit(v) -> tuple[float, float, float]:
    """``decoder.quality_fit``: three finite numbers ``(a, b, c)`` within +-:data:`QUALITY_FIT_LIMIT`; raises
    :class:`Invalid`."""
    if (not isinstance(v, (list, tuple)) or len(v) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                       and -QUALITY_FIT_LIMIT <= x <= QUALITY_FIT_LIMIT for x in v)):  # NaN fails the comparison
        raise Invalid(f"must be [a, b, c], three finite numbers within +-{QUALITY_FIT_LIMIT:g} (the quality shown is "
                      "a * predicted IoU + b * stability + c),")
    return tuple(float(x) for x in v)


def _prefixes(v):
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise Invalid("must be a list of parameter-name prefixes")
    return tuple(v)


#: quality estimates a mask can be shown with (``DecoderSettings.quality``), the default first, and what each is
QUALITY_KINDS = {"predicted": "the decoder's predicted IoU", "stability": "the stability score of its logits",
                 "mean": "mean of the decoder's predicted IoU and its logits' stability score",
                 "fitted": "a map of the decoder's predicted IoU and its logits' stability score fitted to measured IoUs"}
QUALITIES = tuple(QUALITY_KINDS)

#: decoders that may answer a user's box alone (``decoder.box_prompts``)
BOX_ROUTES = ("base", "tuned", "clicks", "bare", "boxes")
#: the box routes answered on the bare encoder's embedding (:class:`~usam.predictor.Predictor` gives it)
BARE_ROUTES = ("bare", "boxes")
#: the box routes for a user's box only: the heads' own boxes go to the backbone's decoder instead
USER_BOX_ROUTES = ("clicks", *BARE_ROUTES)
#: the decoder settings that act at inference only (read by :class:`usam.predictor.Predictor`, set for a block by
#: ``TunedDecoder.using``, chosen on val by ``scripts/tune_head_options.py``)
INFERENCE_CHOICES = ("box_prompts", "click_window", "click_zoom", "click_merge", "first_click", "quality",
                     "quality_fit")


@dataclass(frozen=True)
class DecoderSettings:
    """The tuned prompt decoder: ``tune`` it at all (training only), its transformer's ``lora`` (``None``: none),
    the parameter-name prefixes it ``train``s in full, which decoder answers a box alone (``box_prompts``:
    ``base``, the backbone's own; ``tuned``; ``clicks``, the click decoder, trained on boxes followed by
    corrective clicks; ``bare``, the backbone's own on the bare encoder's embedding, i.e. the bare backbone's box
    path exactly, for an adapter whose encoder LoRA costs it Dice: one more encoder pass per image, cached, in
    :class:`~usam.predictor.Predictor` after ``set_image``; or ``boxes``, the adapter's box decoder on that same
    bare embedding; chosen on val by ``scripts/tune_head_options.py``), whether a box alone gets a decoder of its
    own (``boxes: separate``: a whole copy of the backbone's prompt encoder + mask decoder fine-tuned on
    ground-truth boxes alone, jittered as MedSAM's training boxes were, on the bare encoder's embeddings, by
    :mod:`usam.train.boxes`, which keeps it only where it beats the adapter's box route on val),
    whether clicks get a decoder of their own (``clicks: separate``: a whole copy of the backbone's prompt encoder +
    mask decoder trained on simulated interactions only, while the tuned decoder keeps serving the heads), and how
    many clicks a corrective prompt shows it (``click_window``: with a previous mask fed back, the first click and
    the latest ``click_window - 1``; the earlier ones live on in that mask. ``None``: every click; chosen on val by
    ``scripts/tune_head_options.py --clicks``), whether later corrective clicks are answered on a zoomed view
    (``click_zoom``: ``{"after": N, "expand": E}``, RITM's Zoom-In: from click N + 1 on, the click decoder answers on
    the encoder's embedding of a square E times the current mask's extent, pasted back into the whole mask; one more
    encoder pass whenever the view moves, the view snapped so that it rarely does; ``None``: never; see
    :meth:`usam.predictor.Predictor.predict`; chosen on val by the same script), whether later corrective clicks
    change the mask only where they act (``click_merge``: N, FocalClick's Progressive Merge: from click N + 1 on, the
    answer replaces the previous mask only in the connected region of their difference that holds the latest click,
    :func:`usam.ops.clicks.merge_region`; ``None``: the answer is taken whole; chosen on val by the same script),
    and how a first click is answered
    (``first_click``: ``direct``, the click decoder's three candidates as they are; ``box_refine``, each candidate
    re-answered by the decoder of a box alone from its own tight box and scored by its predicted IoU and that
    answer's agreement, see :meth:`usam.predictor.Predictor.predict`; chosen on val by the same script), and the
    quality estimate shown with a mask (``quality``: ``predicted``, the decoder's predicted IoU; ``stability``,
    SAM's stability score of its logits; ``mean``, the mean of the two; ``fitted``, ``a * predicted + b *
    stability + c`` clipped to [0, 1] with ``quality_fit = (a, b, c)`` fitted to measured IoUs on the train split;
    see :meth:`usam.predictor.Predictor.quality`; chosen on val by ``scripts/tune_head_options.py --quality-only``).
    ``quality`` never changes which candidate is chosen.)"""

    tune: bool = field(default=True, metadata=check(boolean))
    lora: LoraSettings | None = field(default_factory=lambda: LoraSettings(16, 16.0, 0.0, DECODER_TARGETS),
                                      metadata=check(_decoder_lora))
    train: tuple[str, ...] = field(default=DEFAULT_DECODER_TRAIN, metadata=check(optional(_prefixes)))
    box_prompts: str = field(default="base", metadata=check(one_of(*BOX_ROUTES)))
    clicks: str = field(default="shared", metadata=check(one_of("shared", "separate")))
    boxes: str = field(default="base", metadata=check(one_of("base", "separate")))
    click_window: int | None = field(default=None, metadata=check(optional(_click_window)))
    click_zoom: tuple[int, float] | None = field(default=None, metadata=check(optional(_click_zoom)))
    click_merge: int | None = field(default=None, metadata=check(optional(_click_merge)))
    first_click: str = field(default="direct", metadata=check(one_of("direct", "box_refine")))
    quality: str = field(default="predicted", metadata=check(one_of(*QUALITIES)))
    quality_fit: tuple[float, float, float] | None = field(default=None, metadata=check(optional(_quality_fit)))

    def __post_init__(self):
        if self.box_prompts == "clicks" and self.clicks != "separate":
            raise ConfigError("decoder.box_prompts 'clicks' needs a click decoder of its own (decoder.clicks: separate)")
        if self.box_prompts == "boxes" and self.boxes != "separate":
            raise ConfigError("decoder.box_prompts 'boxes' needs a box decoder of its own (decoder.boxes: separate, "
                              "trained by python -m usam.train.boxes)")
        if self.quality == "fitted" and self.quality_fit is None:
            raise ConfigError("decoder.quality 'fitted' needs decoder.quality_fit [a, b, c] "
                              "(scripts/tune_head_options.py --quality-only fits it on the train split)")

    @classmethod
    def from_adapter(cls, block: dict) -> "DecoderSettings":
        """The ``decoder`` block of a saved adapter's ``config.json`` (no ``lora`` key there means no LoRA)."""
        return build_section(cls, {"lora": None, **block}, "decoder")

    def to_adapter(self) -> dict:
        """The ``decoder`` block written to ``config.json``."""
        block = {"lora": self.lora.to_dict() if self.lora else None, "train": list(self.train or DEFAULT_DECODER_TRAIN),
                 "box_prompts": self.box_prompts}
        if self.clicks == "separate":  # "shared" is not written: adapters without a click decoder keep their config.json
            block["clicks"] = self.clicks
        if self.boxes == "separate":  # likewise "base"
            block["boxes"] = self.boxes
        if self.click_window is not None:
            block["click_window"] = self.click_window
        if self.click_zoom is not None:
            block["click_zoom"] = {"after": self.click_zoom[0], "expand": self.click_zoom[1]}
        if self.click_merge is not None:
            block["click_merge"] = self.click_merge
        if self.first_click != "direct":  # the default is not written: earlier adapters keep their config.json
            block["first_click"] = self.first_click
        if self.quality != "predicted":  # likewise
            block["quality"] = self.quality
        if self.quality_fit is not None:
            block["quality_fit"] = list(self.quality_fit)
        return block


# --------------------------------------------------------------------------------------------- config
@dataclass
class AdapterConfig:
    """What an adapter is: enough to rebuild it on a compatible backbone.

    ``decoder`` is the ``config.json`` block (a dict, read through :meth:`DecoderSettings.from_adapter`)."""

    name: str
    backbone: str
    backbone_checksum: str
    tasks: dict[str, TaskSpec]
    lora: LoraSettings | None = None
    decoder: dict | None = None
    input_size: int = 256
    training: dict = field(default_factory=dict)
    #: per-task head options, e.g. ``{"breast_lesion_det": {"refine_with_decoder": true}}``
    head_options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "library_name": "usam",
            "usam_version": __version__,
            "name": self.name,
            "backbone": {"name": self.backbone, "checksum": self.backbone_checksum, "input_size": self.input_size},
            "tasks": {tid: {"kind": t.kind, "num_classes": t.num_classes, "class_names": t.class_names}
                      for tid, t in self.tasks.items()},
            "lora": self.lora.to_dict() if self.lora else None,
            "decoder": self.decoder,
            "preprocessing": preprocessing(self.input_size),
            "training": self.training,
            "head_options": self.head_options,
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "config.json") -> "AdapterConfig":
        """Check ``config.json``'s content (:func:`check_config_dict`) and build the config; :class:`AdapterError`."""
        try:
            check_config_dict(d)
            tasks = {tid: TaskSpec(task_id=tid, kind=t["kind"], num_classes=int(t["num_classes"]),
                                   class_names=t.get("class_names")) for tid, t in d["tasks"].items()}
            return cls(
                name=d["name"], backbone=d["backbone"]["name"], backbone_checksum=d["backbone"]["checksum"],
                tasks=tasks, lora=LoraSettings.from_dict(d["lora"]) if d.get("lora") else None,
                decoder=d.get("decoder"), input_size=int(d["backbone"].get("input_size", 256)),
                training=d.get("training") or {}, head_options=d.get("head_options") or {},
            )
        except ConfigError as exc:
            raise AdapterError(f"{where} is not a usam adapter config ({exc})") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AdapterError(f"{where} is not a usam adapter config ({type(exc).__name__}: {exc})") from exc


def check_config_dict(d) -> None:
    """Types and ranges of an adapter's ``config.json`` (raises :class:`ConfigError`; a missing key: KeyError)."""
    if not isinstance(d, dict):
        raise ConfigError(f"it must be a JSON object, got {type(d).__name__}")
    check_adapter_name(d["name"])
    bb = d["backbone"]
    if not isinstance(bb, dict) or not isinstance(bb.get("name"), str) or not isinstance(bb.get("checksum"), str):
        raise ConfigError("backbone must be an object with a name and a checksum (strings)")
    size = bb.get("input_size", 256)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 4096:
        raise ConfigError(f"backbone.input_size must be a positive integer, got {short_repr(size)}")
    if "preprocessing" in d and d["preprocessing"] != preprocessing(size):
        raise ConfigError(f"preprocessing {short_repr(d['preprocessing'])} is not what usam does for this backbone "
                          f"({preprocessing(size)}): the adapter was made for another input pipeline")
    _check_tasks(d["tasks"])
    for key in ("lora", "decoder", "training", "head_options"):
        if d.get(key) is not None and not isinstance(d[key], dict):
            raise ConfigError(f"{key} must be an object or null, got {type(d[key]).__name__}")
    if d.get("lora"):
        LoraSettings.from_dict(d["lora"])
    if d.get("decoder"):
        DecoderSettings.from_adapter({k: v for k, v in d["decoder"].items() if k != "tune"})
    check_head_options(d.get("head_options") or {}, {tid: t["kind"] for tid, t in d["tasks"].items()})
    boxed = [tid for tid, o in (d.get("head_options") or {}).items() if o.get("refine_decoder") == "boxes"]
    if boxed and (d.get("decoder") or {}).get("boxes") != "separate":
        raise ConfigError(f"head_options of {boxed}: refine_decoder 'boxes' needs a box decoder (decoder.boxes: "
                          "separate; python -m usam.train.boxes makes one)")


def _check_tasks(tasks) -> None:
    if not isinstance(tasks, dict) or not tasks:
        raise ConfigError(f"tasks must be a non-empty object task_id -> task, got {short_repr(tasks)}")
    for tid, t in tasks.items():
        if not tid or "." in tid or "/" in tid:
            raise ConfigError(f"task id {tid!r} must be non-empty, without '.' or '/'")
        if not isinstance(t, dict):
            raise ConfigError(f"task {tid!r} must be an object with kind and num_classes, got {short_repr(t)}")
        kind, n = t.get("kind"), t.get("num_classes")
        if not isinstance(kind, str) or kind not in KINDS:
            raise ConfigError(f"task {tid!r} has unknown kind {short_repr(kind)} (known: {', '.join(KINDS)})")
        lo = KINDS[kind].min_classes
        if isinstance(n, bool) or not isinstance(n, int) or not lo <= n <= MAX_CLASSES:
            raise ConfigError(f"task {tid!r}: num_classes must be an integer in [{lo}, {MAX_CLASSES}] for a {kind} task, "
                              f"got {short_repr(n)}")
        names = t.get("class_names")
        if names is not None and (not isinstance(names, list) or len(names) != n
                                  or not all(isinstance(x, str) for x in names)):
            raise ConfigError(f"task {tid!r}: class_names must be null or a list of {n} strings")
