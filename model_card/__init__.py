"""Model cards for exported Auto-MLM folders and publishing them on the Hugging Face Hub.

`generate_model_card(folder)` writes the folder's ``README.md`` (and ``training_curves.png``) from the files the
export wrote; `push_to_hub(folder, repo_id)` uploads a complete folder. The command-line entry points are
``automlm-card`` and ``automlm-push``.
"""

from .card import CITATION, AutoMLMModelCardData, generate_model_card, render_model_card
from .curves import plot_training_curves
from .hub import check_export, code_files, missing_files, push_to_hub, upload_files
from .metadata import hub_language_codes

__all__ = [
    "CITATION",
    "AutoMLMModelCardData",
    "check_export",
    "code_files",
    "generate_model_card",
    "hub_language_codes",
    "missing_files",
    "plot_training_curves",
    "push_to_hub",
    "render_model_card",
    "upload_files",
]
