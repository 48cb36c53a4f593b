"""``source = auto``: Kaggle data when a registered source recognises ``[paths] data_dir`` (a folder that looks like
Kaggle data but matches no edition stops the run), otherwise the embedded demo, said loudly."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from dataloader.sources.registry import SourceData, recognising_sources, register_source
from utils.config_schema import DataConfig, PathsConfig

log = logging.getLogger(__name__)


def kaggle_entry(paths: PathsConfig) -> Optional[Any]:
    """The registered source that recognises ``[paths] data_dir`` as its Kaggle data, or None."""
    data_dir = Path(paths.data_dir)
    if not data_dir.is_dir():
        return None
    return next((entry for entry in recognising_sources() if entry.recognise(data_dir)), None)


def uses_demo(data: DataConfig, paths: PathsConfig) -> bool:
    """Whether a run of these settings trains on the embedded demo (``source = demo``, or ``auto`` without Kaggle
    data in ``data_dir``)."""
    return data.source == "demo" or (data.source == "auto" and kaggle_entry(paths) is None)


@register_source("auto")
def auto_source(data: DataConfig, paths: PathsConfig) -> SourceData:
    """Kaggle data when ``data_dir`` holds it (any edition; a folder that looks like Kaggle data but matches no
    edition stops the run), otherwise the demo."""
    entry = kaggle_entry(paths)
    if entry is not None:
        return entry.loader(data, paths)
    data_dir = Path(paths.data_dir)
    log.warning("=" * 78)
    log.warning("No Kaggle data in %s: using the EMBEDDED DEMO DATASET (synthetic species, BirdCLEF %s layout) "
                "in %s.", data_dir, data.demo_edition, paths.demo_dir)
    log.warning("Run ./download_data.sh %s for the real data, or set [data] source = demo to silence this.",
                data.competition)
    log.warning("=" * 78)
    from dataloader.sources.demo_source import demo_source  # noqa: PLC0415

    return demo_source(data, paths)
