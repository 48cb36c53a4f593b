"""The embedded demo as a data source (in the layout of ``[data] demo_edition``), and ``auto``: Kaggle data when a
registered source recognises ``[paths] data_dir``, otherwise the demo, said loudly."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dataloader.sources.birdclef import read_birdclef
from dataloader.sources.registry import SourceData, recognising_sources, register_source

log = logging.getLogger(__name__)


@register_source("demo")
def demo_source(data: Any, paths: Any) -> SourceData:
    """The embedded synthetic demo in ``[paths] demo_dir``, generated on first use, in BirdCLEF ``demo_edition``
    layout."""
    from dataloader.demo import generate_demo  # noqa: PLC0415

    folder = generate_demo(paths.demo_dir, seed=data.demo_seed, scale=data.demo_scale, workers=data.num_workers,
                           edition=data.demo_edition)
    return read_birdclef(folder, data.demo_edition, data.min_rating, name=f"demo-{data.demo_edition}",
                         is_demo=True)


@register_source("auto")
def auto_source(data: Any, paths: Any) -> SourceData:
    """Kaggle data when ``data_dir`` holds it (any edition; a folder that looks like Kaggle data but matches no
    edition stops the run), otherwise the demo."""
    data_dir = Path(paths.data_dir)
    for entry in recognising_sources():
        if data_dir.is_dir() and entry.recognise(data_dir):
            return entry.loader(data, paths)
    log.warning("=" * 78)
    log.warning("No Kaggle data in %s: using the EMBEDDED DEMO DATASET (synthetic species, BirdCLEF %s layout) "
                "in %s.", data_dir, data.demo_edition, paths.demo_dir)
    log.warning("Run ./download_data.sh %s for the real data, or set [data] source = demo to silence this.",
                data.competition)
    log.warning("=" * 78)
    return demo_source(data, paths)
