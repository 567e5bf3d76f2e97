"""Command-line entry points: ``automlm-card DIR`` (write the model card) and ``automlm-push DIR --repo-id ...``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import get_token

from training import cli

from .card import DEFAULT_LICENSE, generate_model_card
from .hub import push_to_hub

REDACTED = "<redacted>"
CARD = "automlm-card"
PUSH = "automlm-push"


class _RedactToken(logging.Filter):
    """Replace the token in every log record that passes through a handler (whoever logged it)."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, REDACTED), None
        return True


def build_card_parser() -> cli.ArgumentParser:
    """The arguments of ``automlm-card``."""
    parser = cli.ArgumentParser(
        prog=CARD,
        description="Write the model card (README.md) and training curves of an exported Auto-MLM folder.",
        example=f"{CARD} outputs/automlm-default/final --model-id you/automlm-e5",
    )
    parser.add_argument("folder", type=Path, help="the export folder")
    parser.add_argument("--model-id", help="id the usage examples load, e.g. ORG/NAME (default: the folder's name)")
    parser.add_argument("--model-name", help="title of the card (default: the model id)")
    parser.add_argument("--plain-repo-id", help="Hub id or path of the plain export (loads without custom code)")
    parser.add_argument("--license", default=DEFAULT_LICENSE, help=f"license id (default: {DEFAULT_LICENSE})")
    parser.add_argument("--stdout", action="store_true", help="print the card instead of writing any file")
    return parser


@cli.entry_point(CARD)
def card_main(argv: Sequence[str] | None = None) -> None:
    """``automlm-card DIR``: (re)write ``DIR/README.md`` and ``DIR/training_curves.png`` from the folder's files."""
    args = build_card_parser().parse_args(argv)
    text = generate_model_card(
        args.folder,
        plain_repo_id=args.plain_repo_id,
        write=not args.stdout,
        model_id=args.model_id,
        model_name=args.model_name,
        license=args.license,
    )
    if args.stdout:
        print(text)
    else:
        print(f"Wrote {args.folder / 'README.md'}")


def build_push_parser() -> cli.ArgumentParser:
    """The arguments of ``automlm-push``."""
    parser = cli.ArgumentParser(
        prog=PUSH,
        description="Upload an exported Auto-MLM folder to the Hugging Face Hub (create_repo + upload_folder). "
        "The token comes from --token, HF_TOKEN or `hf auth login`, and is never printed.",
        example=f"{PUSH} outputs/automlm-default/final --repo-id you/automlm-e5",
    )
    parser.add_argument("folder", type=Path, help="the export folder (with README.md: run automlm-card first)")
    parser.add_argument("--repo-id", required=True, help="target model repository, ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", help="branch to commit to (created if missing; default: main)")
    parser.add_argument("--commit-message", help="commit message")
    parser.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded; send nothing")
    parser.add_argument("--token", help="Hub token (prefer HF_TOKEN or `hf auth login`: argv is visible to others)")
    return parser


@cli.entry_point(PUSH)
def push_main(argv: Sequence[str] | None = None) -> None:
    """``automlm-push DIR --repo-id ORG/NAME``: upload a complete export folder to the Hub."""
    args = build_push_parser().parse_args(argv)
    token = None if args.dry_run else args.token or get_token()
    redactor = _RedactToken(token) if token else None
    handlers = logging.getLogger().handlers
    if redactor:
        for handler in handlers:
            handler.addFilter(redactor)
    try:
        result = push_to_hub(
            args.folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            dry_run=args.dry_run,
            token=token,
        )
    except Exception as error:  # any failure, the Hub's included: one line, without the token
        message = cli.describe(error)
        if not isinstance(error, cli.USER_ERRORS):  # e.g. the Hub's HTTP errors: the type says what failed
            message = f"{type(error).__name__}: {message}"
        raise cli.UserError(message.replace(token, REDACTED) if token else message) from None
    finally:
        if redactor:
            for handler in handlers:
                handler.removeFilter(redactor)
    if args.dry_run:
        sizes = {name: (args.folder / name).stat().st_size for name in result}
        where = f"{args.repo_id} ({'private, ' if args.private else ''}branch {args.revision or 'main'})"
        print(f"Dry run: would upload {len(result)} files ({sum(sizes.values()) / 1e6:.1f} MB) to {where}:")
        for name, size in sizes.items():
            print(f"  {name}  ({size:,} bytes)")
    else:
        print(f"Uploaded {args.folder} to https://huggingface.co/{args.repo_id}: {result}")
