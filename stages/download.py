"""download <name>: fetch ``downloads.<name>.url`` to its ``path`` and check its MD5.

The file appears only once it is complete and verified, so a broken or tampered download
never reaches prepare. One stage per entry of `downloads` in params.yaml (dvc.yaml foreach).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from torchvision.datasets.utils import check_md5, download_url

from stages.common.config.data import Download
from stages.common.plumbing.command import run_stage
from stages.common.plumbing.errors import DataError, ParamsError, first_line
from stages.common.plumbing.stage_params import StageParams

log = logging.getLogger("download")


def download(name: str, url: str, md5: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and check_md5(str(path), md5):
        log.info("%s: %s is already there and verified", name, path)
        return
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as staging:
        try:
            download_url(url, staging, path.name)
        except Exception as error:  # urllib, http and socket errors come in many types
            raise DataError(
                f"downloads.{name}: fetching {url} failed ({first_line(error)}); without the "
                "internet, give a local copy: `bash run.sh --preset smoke --data PATH` for a "
                "first run (README: your own copy of the data)"
            ) from None
        fetched = Path(staging) / path.name
        if not check_md5(str(fetched), md5):
            raise DataError(
                f"downloads.{name}: {url} does not have the MD5 {md5} (corrupt download, or the "
                "file changed at its source); nothing was written"
            )
        os.replace(fetched, path)
    log.info("%s: %s -> %s (%d bytes, MD5 verified)", name, url, path, path.stat().st_size)


class DownloadParams(StageParams):
    downloads: dict[str, Download]


def main(params: DownloadParams) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a key of `downloads` in params.yaml")
    name = parser.parse_args().name
    if name not in params.downloads:
        raise ParamsError(f"downloads.{name}: no such entry in params.yaml")
    entry = params.downloads[name]
    download(name, entry.url, entry.md5, Path(entry.path))


if __name__ == "__main__":
    run_stage(main, DownloadParams)
