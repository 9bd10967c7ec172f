"""``usam push`` / ``usam pull``: share adapters through the Hugging Face Hub (see :mod:`usam.hub`)."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import DataError
from ...hub import pull_adapter, push_adapter
from .common import log


def _read_evaluation(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"--metrics {path!r} is not a readable JSON file: {exc}") from exc
    if not isinstance(data, dict) or "tasks" not in data:
        raise DataError(f"--metrics {path!r} is not `usam evaluate` results (a JSON object with \"tasks\")")
    return data


def cmd_push(args) -> int:
    result = push_adapter(
        args.adapter_dir, args.repo_id, private=args.private, revision=args.revision, commit_message=args.message,
        regenerate_card=args.regenerate_card, evaluation=_read_evaluation(args.metrics), base_model=args.base_model,
        license=args.license, create_pr=args.create_pr, dry_run=args.dry_run, log=log,
    )
    if args.dry_run:
        print(json.dumps({"repo_id": result.repo_id, "revision": result.revision, "files": result.files,
                          "commit_message": result.commit_message, "card_generated": result.card_generated,
                          "delete_if_present": result.deleted_patterns}, indent=2))
        if args.show_card:
            print(result.card)
        return 0
    print(result.url)
    return 0


def cmd_pull(args) -> int:
    print(pull_adapter(args.repo_id, revision=args.revision, local_dir=args.local_dir, log=log))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "push", help="upload an adapter directory to a Hugging Face Hub model repo",
        description="Validate ADAPTER_DIR (safetensors only, complete, self-consistent), generate its model card "
                    "README.md if it has none, and upload the adapter files (config.json, heads.safetensors, "
                    "adapter_config.json + adapter_model.safetensors with encoder LoRA, metrics.json, README.md) "
                    "to ORG/NAME in one commit. Needs network and a Hub token (`hf auth login` or HF_TOKEN).",
    )
    p.add_argument("adapter_dir", metavar="ADAPTER_DIR", help="adapter directory written by `usam train`")
    p.add_argument("repo_id", metavar="ORG/NAME", help="Hub model repository (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", default=None, metavar="BRANCH", help="branch to commit to (created if missing; default main)")
    p.add_argument("--message", default=None, metavar="MSG",
                   help="commit message (default: 'Upload usam adapter NAME (TASKS)')")
    p.add_argument("--regenerate-card", action="store_true", help="upload a freshly generated README.md even if one exists")
    p.add_argument("--metrics", default=None, metavar="RESULTS.json",
                   help="`usam evaluate` results to report in the card's model-index (regenerates the card)")
    p.add_argument("--base-model", default=None, metavar="HUB_ID", help="the card's base_model (default: from the backbone)")
    p.add_argument("--license", default=None, help="license of the adapter weights in a generated card (default apache-2.0)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing directly")
    p.add_argument("--dry-run", action="store_true", help="validate and show what would be uploaded; upload nothing")
    p.add_argument("--show-card", action="store_true", help="with --dry-run: also print the model card")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser(
        "pull", help="download an adapter from the Hugging Face Hub into the local cache",
        description="Download ORG/NAME's adapter files (only those; never pickles) into the Hugging Face cache, or "
                    "--local-dir, and validate them. Afterwards `usam.load(adapters=[\"ORG/NAME\"])` and "
                    "`--adapters ORG/NAME` work offline. Prints the local directory.",
    )
    p.add_argument("repo_id", metavar="ORG/NAME", help="Hub model repository of a usam adapter")
    p.add_argument("--revision", default=None, help="branch, tag or commit (default main)")
    p.add_argument("--local-dir", default=None, help="download into this directory instead of the HF cache")
    p.set_defaults(func=cmd_pull)
