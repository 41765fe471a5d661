"""The HTML template `dvc plots show` uses (`.dvc/config`: plots.html_template), with Vega, Vega-Lite
and Vega-Embed inlined, so the plots report renders on a machine without internet.

DVC's own page loads those three scripts from a CDN: offline, only the PNG plots appear. The
template is committed (config/plots_offline.html); `make plots-template` rebuilds it from the npm
registry at the versions DVC pins, each tarball checked against its published sha512 before use.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TEMPLATE = Path("config/plots_offline.html")
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Script:
    package: str
    version: str  # the versions dvc-render's own template loads, so its Vega-Lite specs render the same
    path: str  # inside the tarball
    integrity: str  # npm's dist.integrity for that tarball

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.package}/-/{self.package}-{self.version}.tgz"


SCRIPTS = (
    Script("vega", "5.20.2", "package/build/vega.min.js",
           "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw=="),
    Script("vega-lite", "5.2.0", "package/build/vega-lite.min.js",
           "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw=="),
    Script("vega-embed", "6.18.2", "package/build/vega-embed.min.js",
           "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg=="),
)

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC plots (offline)</title>
    <!-- {versions}: inlined by tasks/platform/plots_offline.py (`make plots-template`), no CDN -->
{inlined}
    <style>
        body { font-family: system-ui, sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


class IntegrityError(RuntimeError):
    """A downloaded tarball is not the one npm published: never inline it."""


def checked(tarball: bytes, integrity: str) -> bytes:
    algorithm, _, expected = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
    if actual != expected:
        raise IntegrityError(f"{algorithm} of the tarball is {actual}, npm published {expected}")
    return tarball


def script_text(script: Script, tarball: bytes) -> str:
    with tarfile.open(fileobj=io.BytesIO(checked(tarball, script.integrity)), mode="r:gz") as archive:
        member = archive.extractfile(script.path)
        if member is None:
            raise IntegrityError(f"{script.url} holds no {script.path}")
        return member.read().decode("utf-8")


def render(texts: list[str]) -> str:
    """The page, each script inlined; `</script` inside a script would end the tag early, so it is escaped."""
    escaped = [text.replace("</script", "<\\/script") for text in texts]
    inlined = "\n".join(f"    <script>{text}</script>" for text in escaped)
    versions = ", ".join(f"{s.package}@{s.version}" for s in SCRIPTS)
    return PAGE.replace("{inlined}", inlined).replace("{versions}", versions)


def build(target: Path = TEMPLATE) -> Path:
    texts = []
    for script in SCRIPTS:
        log.info("fetching %s", script.url)
        with urllib.request.urlopen(script.url, timeout=60) as response:
            texts.append(script_text(script, response.read()))
    target.write_text(render(texts), encoding="utf-8")
    return target


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"wrote {build()}")
