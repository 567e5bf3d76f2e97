"""Publish an export folder on the Hugging Face Hub: completeness check, dry run, `create_repo` + `upload_folder`.

The token is taken from the argument, the ``HF_TOKEN`` environment variable or the stored login (in that order, via
`huggingface_hub.get_token`); it is handed to `HfApi` and never logged, printed or written.
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# Never uploaded: caches and editor leftovers (fnmatch: `*` also matches `/`). `.git` and `.cache/huggingface` are
# excluded by huggingface_hub itself.
IGNORE_PATTERNS = ["*__pycache__*", "*.pyc", ".cache/*", "*/.cache/*", ".ipynb_checkpoints*", "*.DS_Store"]


def code_files(folder: str | Path, config: dict[str, Any]) -> list[str]:
    """The code files a custom-code folder needs: the modules ``auto_map`` names and what they import relatively.

    Args:
        folder: the export folder (read to follow relative imports).
        config: its ``config.json``.

    Returns:
        File names such as ``["configuration_automlm.py", "modeling_automlm.py", "masking.py"]``, in discovery order;
        files that do not exist are included (they are what a completeness check reports).
    """
    folder = Path(folder)
    references: list[str] = []
    for value in (config.get("auto_map") or {}).values():
        references.extend(value if isinstance(value, (list, tuple)) else [value])
    # "module.Class" lives in this folder; "org/repo--module.Class" lives in another repository.
    pending = [f"{ref.rsplit('.', 1)[0]}.py" for ref in references if isinstance(ref, str) and "--" not in ref]
    found: list[str] = []
    while pending:
        name = pending.pop(0)
        if name in found:
            continue
        found.append(name)
        path = folder / name
        if not path.is_file():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                modules = [node.module] if node.module else [alias.name for alias in node.names]
                pending.extend(f"{module.replace('.', '/')}.py" for module in modules)
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: not valid JSON ({error.msg}, line {error.lineno}); fix it or export the model again."
        ) from None


def missing_files(folder: str | Path) -> list[str]:
    """What a folder lacks to be a complete export (weights, config, tokenizer, card, code, sentence-transformers).

    Args:
        folder: the export folder.

    Returns:
        One description per missing piece, naming the file(s); empty when the folder is complete.

    Raises:
        ValueError: ``config.json`` or ``modules.json`` is not valid JSON.
    """
    folder = Path(folder)
    missing = []
    if not folder.is_dir():
        return [f"the folder itself ({folder} {'is a file' if folder.exists() else 'does not exist'})"]
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append("model weights (model.safetensors or pytorch_model.bin)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append("tokenizer (tokenizer.json or tokenizer_config.json)")
    if not (folder / "README.md").is_file():
        missing.append(f"README.md (write the model card with `automlm-card {folder}`)")
    if (folder / "config.json").is_file():
        config = _read_json(folder / "config.json")
        for name in code_files(folder, config):
            if not (folder / name).is_file():
                missing.append(f"{name} (custom code that config.json's auto_map loads)")
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        missing.append("modules.json (sentence-transformers configuration)")
    else:
        for module in _read_json(modules_file):
            if module.get("path") and not (folder / module["path"]).is_dir():
                missing.append(f"{module['path']}/ (module {module.get('name')} of modules.json)")
    return missing


def check_export(folder: str | Path) -> None:
    """Raise if `folder` is not a complete export.

    Raises:
        FileNotFoundError: naming every missing file.
    """
    missing = missing_files(folder)
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a complete export; missing: " + "; ".join(missing) + ". Export the model again "
            "(automlm-train writes everything), or add the missing files."
        )


def upload_files(folder: str | Path) -> list[str]:
    """The files `upload_folder` sends from `folder`: relative POSIX paths, sorted, ignored patterns left out."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    folder = Path(folder)
    paths = sorted(path.relative_to(folder).as_posix() for path in folder.glob("**/*") if path.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS))


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
) -> list[str] | str:
    """Upload a complete export folder to a model repository on the Hub.

    Creates the repository if needed (``create_repo(exist_ok=True)``), the branch `revision` if given, then uploads
    the folder in one commit with ``upload_folder``.

    Args:
        folder: the export folder; refused unless complete (see [`missing_files`]).
        repo_id: ``ORG/NAME`` (or ``NAME`` under your account).
        private: create the repository private (an existing repository keeps its visibility).
        revision: branch to commit to (created from main if missing); default the main branch.
        commit_message: defaults to "Upload Auto-MLM model".
        dry_run: only list the files that would be uploaded; nothing is sent and no token is needed.
        token: a Hub token; defaults to ``HF_TOKEN`` or the stored login.

    Returns:
        The list of files (dry run), or the URL of the commit.

    Raises:
        FileNotFoundError: the folder is not a complete export.
        ValueError: no token is available for a real upload.
    """
    folder = Path(folder)
    check_export(folder)
    files = upload_files(folder)
    readme = (folder / "README.md").read_text(encoding="utf-8")
    if repo_id not in readme:
        logger.warning(
            "README.md never mentions %s, so its usage examples load another id: regenerate it first with "
            "`automlm-card %s --model-id %s`.",
            repo_id,
            folder,
            repo_id,
        )
    if dry_run:
        logger.info("Dry run: %d files would be uploaded to %s; nothing was sent.", len(files), repo_id)
        return files

    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise ValueError("No Hugging Face token: set HF_TOKEN, pass --token, or log in once with `hf auth login`.")
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    repo_id = getattr(repo_url, "repo_id", None) or repo_id  # the Hub may add the user's namespace
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type="model",
        revision=revision,
        commit_message=commit_message or "Upload Auto-MLM model",
        ignore_patterns=IGNORE_PATTERNS,
    )
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("Uploaded %d files from %s to %s: %s", len(files), folder, repo_id, url)
    return url
