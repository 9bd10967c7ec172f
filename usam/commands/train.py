"""``usam train CONFIG.yaml``: train an adapter (see :mod:`usam.train.config` for the file)."""

from __future__ import annotations

import sys


def cmd_train(args) -> int:
    from ..train.trainer import train

    overrides = list(args.set or [])
    if args.output:
        overrides.append(f"output={args.output}")
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    out = train(args.config, overrides=overrides, restart=args.restart, log=lambda m: print(m, file=sys.stderr, flush=True))
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
