"""LoRA adapters on the frozen image encoder (and on a decoder copy), via ``peft``.

Several adapters live side by side in one encoder (``peft`` keeps one ``lora_A/lora_B`` pair per
adapter name in each target layer); :func:`activate_lora` switches between them, or disables all,
without touching the base weights.

``peft`` (which imports ``transformers``) is imported on the first LoRA added or loaded, not with usam: it
added about a third to ``import usam``'s CPU time (12.8 vs 9.5 CPU-s), and a model without LoRA (the bare
backbone, adapters of heads and a tuned decoder) never needs it. Until then no peft layer can exist, which :func:`is_lora_layer` relies on.
"""

from __future__ import annotations

import copy
import hashlib
import re
import sys
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import AdapterError, ConfigError, UsamError
from .settings import Invalid, build_section, check, is_int, number, text

#: Attention projections of TinyViT (LiteMedSAM), segment-anything's ViT and transformers' SamVisionEncoder.
#: Linear layers only: no convolution is hit.
ENCODER_TARGETS = r".*\battn\.(qkv|proj)"
#: Token-side layers of SAM's two-way transformer (mask decoder): self-attention, the token queries /
#: outputs of token-to-image attention, the token keys / values of image-to-token attention, the MLP.
#: The image-side projections (4096 tokens per image) stay frozen: LoRA there would double the decoder's cost.
DECODER_TARGETS = (
    r".*transformer\.(layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"
    r"|layers\.\d+\.cross_attn_token_to_image\.(q_proj|out_proj)"
    r"|layers\.\d+\.cross_attn_image_to_token\.(k_proj|v_proj)"
    r"|layers\.\d+\.mlp\.(lin1|lin2)"
    r"|final_attn_token_to_image\.(q_proj|out_proj))"
)


def _rank(v):
    if not is_int(v) or v < 1:
        raise Invalid("must be a positive integer (a LoRA rank must be >= 1)")
    return v


def _dropout(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise Invalid("is out of range: LoRA dropout must be in [0, 1)")
    return v


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (``rank``, ``alpha``, ``dropout``) and the ``targets`` regex of module names.

    The defaults are the only ones: ``dropout`` 0.0 is what every shipped adapter's LoRA was trained with."""

    rank: int = field(default=8, metadata=check(_rank))
    alpha: float = field(default=16.0, metadata=check(number(0.0, above=True)))
    dropout: float = field(default=0.0, metadata=check(_dropout))
    targets: str = field(default=ENCODER_TARGETS, metadata=check(text))

    @classmethod
    def from_dict(cls, d: dict | None, default_targets: str = ENCODER_TARGETS, section: str = "lora") -> "LoraSettings":
        """Checked settings from a mapping (:func:`~usam.adapters.settings.build_section`); ``targets`` defaults to
        ``default_targets`` (the decoder's for ``decoder.lora``)."""
        d = dict(d) if isinstance(d, dict) else d
        if isinstance(d, dict):
            d.setdefault("targets", default_targets)
        return build_section(cls, d, section)

    def to_dict(self) -> dict:
        return asdict(self)

    def peft_config(self):
        """This LoRA as ``peft.LoraConfig``."""
        from peft import LoraConfig  # lazy: peft + transformers are heavy (module docstring)

        return LoraConfig(r=int(self.rank), lora_alpha=float(self.alpha), lora_dropout=float(self.dropout),
                          target_modules=self.targets, bias="none")


def add_lora(module: nn.Module, name: str, settings: LoraSettings) -> nn.Module:
    """Inject LoRA adapter ``name`` into ``module`` in place; base weights stay frozen."""
    from peft import inject_adapter_in_model  # lazy: peft + transformers are heavy (module docstring)

    targets = [n for n, m in module.named_modules()
               if (isinstance(m, nn.Linear) or is_lora_layer(m)) and _matches(settings.targets, n)]
    if not targets:
        raise ConfigError(f"LoRA targets {settings.targets!r} match no Linear layer of {type(module).__name__}")
    frozen = {n: p.requires_grad for n, p in module.named_parameters()}
    inject_adapter_in_model(settings.peft_config(), module, adapter_name=name)
    for n, p in module.named_parameters():
        if "lora_" not in n:
            p.requires_grad_(frozen.get(n, False))
    for layer in lora_layers(module):  # new LoRA layers follow the module's mode (no dropout in an eval encoder)
        layer.train(module.training)
    return module


def _matches(pattern: str, name: str) -> bool:
    return re.fullmatch(pattern, name) is not None


def is_lora_layer(m: nn.Module) -> bool:
    """Whether ``m`` is a peft tuner (LoRA) layer; without peft imported none can exist."""
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    return tuners is not None and isinstance(m, tuners.BaseTunerLayer)


def lora_layers(module: nn.Module):
    return [m for m in module.modules() if is_lora_layer(m)]


def activate_lora(module: nn.Module, name: str | None) -> None:
    """Use adapter ``name`` in every LoRA layer of ``module``; ``None`` disables LoRA (bare weights)."""
    for layer in lora_layers(module):
        if name is None or name not in layer.lora_A:
            layer.enable_adapters(False)
        else:
            layer.enable_adapters(True)
            layer.set_adapter(name)


def lora_parameters(module: nn.Module, name: str) -> list[nn.Parameter]:
    return [p for n, p in module.named_parameters() if f".{name}." in n and "lora_" in n]


def lora_state_dict(module: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """peft-format state dict of adapter ``name`` (keys without the adapter name, as peft saves them)."""
    from peft.utils import get_peft_model_state_dict  # lazy: peft + transformers are heavy (module docstring)

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(module, adapter_name=name).items()}


def lora_digest(module: nn.Module, name: str) -> str:
    """SHA-1 of adapter ``name``'s LoRA tensors (names, dtypes, shapes and values): changes whenever its weights do."""
    h = hashlib.sha1()
    for k, v in sorted(lora_state_dict(module, name).items()):
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}".encode())
        h.update(v.float().numpy().tobytes())
    return h.hexdigest()


def load_lora_state(module: nn.Module, name: str, state: dict[str, torch.Tensor]) -> None:
    """Load a peft-format state dict into the already-injected adapter ``name``; refuses missing tensors."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict  # lazy (module docstring)

    expected = set(get_peft_model_state_dict(module, adapter_name=name))
    missing = sorted(expected - set(state))
    if missing:
        raise AdapterError(f"LoRA weights are missing {len(missing)} tensors (first: {missing[0]}): the adapter files are incomplete")
    result = set_peft_model_state_dict(module, state, adapter_name=name)
    unexpected = getattr(result, "unexpected_keys", []) or []
    if unexpected:
        raise AdapterError(f"LoRA weights have {len(unexpected)} tensors this backbone has no place for (first: {unexpected[0]})")


def remove_lora(module: nn.Module, name: str) -> None:
    """Delete adapter ``name`` from every LoRA layer of ``module``."""
    for layer in lora_layers(module):
        if name in layer.lora_A:
            layer.delete_adapter(name)


def merged_copy(module: nn.Module, adapters: list[str] | None = None) -> nn.Module:
    """A deep copy of ``module`` in which every peft LoRA layer is replaced by its plain base layer.

    Args:
      adapters: LoRA adapter names merged into the base weights (``W + scale * B @ A``); ``None``: the
        adapters active in each layer (none where LoRA is disabled); ``[]``: none (bare weights).
    The original module is not touched.
    """
    out = copy.deepcopy(module)
    names = [n for n, m in out.named_modules() if is_lora_layer(m)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        layer = getattr(parent, child)
        if adapters is None:
            todo = [] if getattr(layer, "disable_adapters", False) else list(layer.active_adapters)
        else:
            todo = list(adapters)
        todo = [a for a in todo if a in getattr(layer, "lora_A", {})]
        if todo:
            with torch.no_grad():
                layer.merge(safe_merge=True, adapter_names=todo)
        setattr(parent, child, layer.get_base_layer())
    if any(is_lora_layer(m) for m in out.modules()):  # pragma: no cover - nested tuner layers
        raise UsamError("could not remove every LoRA layer from the exported copy")
    return out.eval()
