"""``usam train CONFIG.yaml``: train an adapter (see :mod:`usam.train.config` for the file)."""

from __future__ import annotations

import json
import sys

from ...errors import ConfigError
from ...train.trainer import train


def cmd_train(args) -> int:
    # every override, flags included, goes through the config's own validation (``--epochs 0`` is refused like
    # ``train: {epochs: 0}``); ``is not None``: an empty or zero value is an override too, never silently dropped
    overrides = list(args.set or [])
    flags = {}
    if args.output is not None:
        flags["output"] = (f"output={json.dumps(args.output)}", f"--output {args.output!r}")
    if args.epochs is not None:
        flags["train.epochs"] = (f"train.epochs={args.epochs}", f"--epochs {args.epochs}")
    overrides += [o for o, _ in flags.values()]
    try:
        out = train(args.config, overrides=overrides, restart=args.restart,
                    log=lambda m: print(m, file=sys.stderr, flush=True))
    except ConfigError as exc:
        named = [flag for key, (_, flag) in flags.items() if f" {key} " in f" {exc} ".replace("'", " ").replace(":", " ")]
        if named:
            raise ConfigError(f"{exc} (given as {', '.join(named)})") from exc
        raise
    print(out)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train an adapter from a YAML config",
        description="Train an adapter (heads, tuned prompt decoder, optional encoder LoRA) on FMC_UIA data or an "
                    "images/ + masks/ folder. An interrupted run resumes from its last finished epoch. "
                    "Runs unchanged under `accelerate launch` for several GPUs / processes.",
    )
    p.add_argument("config", help="training config YAML (see configs/)")
    p.add_argument("--output", default=None, help="adapter directory (overrides the config's output)")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key, e.g. --set train.lr=1e-4")
    p.add_argument("--restart", action="store_true", help="ignore a saved training state and start afresh")
    p.set_defaults(func=cmd_train)
