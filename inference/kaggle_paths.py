"""Finding the attached data in a Kaggle notebook: the competition folder and the model dataset, wherever Kaggle
mounts them (2024: ``/kaggle/input/<slug>/``; today also ``/kaggle/input/competitions/<slug>/`` and
``/kaggle/input/datasets/<owner>/<slug>/``), by searching ``/kaggle/input`` to a bounded depth. Standard library
only: the notebook imports it before anything is installed."""
from __future__ import annotations

import os
from typing import Callable, Optional

SEARCH_DEPTH = 4  # datasets/<owner>/<slug>/ plus one folder inside it
SKIP = {"train_audio", "train_soundscapes", "test_soundscapes", "unlabeled_soundscapes", "models", "wheels",
        "__pycache__"}  # large folders that never hold what is searched for


COMPETITION_FILES = {"train.csv", "train_metadata.csv", "taxonomy.csv", "eBird_Taxonomy_v2021.csv"}


def is_competition(folder: str, files: set[str], dirs: set[str]) -> bool:
    """A BirdCLEF competition folder: ``sample_submission.csv`` beside ``test_soundscapes/`` or any edition's
    metadata (a copy without a ``test_soundscapes/`` folder is still the competition: the dry run takes over)."""
    return "sample_submission.csv" in files and ("test_soundscapes" in dirs or bool(files & COMPETITION_FILES))


def is_model_dataset(folder: str, files: set[str], dirs: set[str]) -> bool:
    """A dataset made by ``python -m inference.package``: ``predict.py`` beside ``inference/``."""
    return "predict.py" in files and "inference" in dirs


def find_folders(root: str, is_match: Callable[[str, set[str], set[str]], bool], depth: int = SEARCH_DEPTH
                 ) -> tuple[list[str], list[str]]:
    """Folders under ``root`` (at most ``depth`` levels down) that ``is_match``, and the folders looked at.
    A match is not searched further; symbolic links are not followed."""
    found, looked = [], []
    root = os.path.abspath(root)
    for folder, dirs, files in os.walk(root):
        looked.append(folder)
        level = 0 if folder == root else os.path.relpath(folder, root).count(os.sep) + 1
        if is_match(folder, set(files), set(dirs)):
            found.append(folder)
            dirs[:] = []
            continue
        dirs[:] = [] if level >= depth else sorted(d for d in dirs if d not in SKIP and not d.startswith("."))
    return sorted(found), looked


def locate(what: str, env_name: str, root: str, is_match: Callable[[str, set[str], set[str]], bool],
           environ: Optional[dict] = None) -> str:
    """The one folder of ``what`` under ``root`` (``env_name`` overrides); none or several stop with the paths
    that were looked at and the variable that settles it."""
    environ = os.environ if environ is None else environ
    if environ.get(env_name):
        return environ[env_name]
    found, looked = find_folders(root, is_match)
    if len(found) == 1:
        return found[0]
    if not found:
        shown = ", ".join(looked[:12]) + (f" and {len(looked) - 12} more" if len(looked) > 12 else "")
        raise SystemExit(f"No {what} under {root} (searched {len(looked)} folders, {SEARCH_DEPTH} levels deep: "
                         f"{shown}). Attach it to the notebook, or set {env_name} to its path.")
    raise SystemExit(f"{len(found)} candidates for the {what} under {root}: {', '.join(found)}. Set {env_name} to "
                     f"the one to use.")
