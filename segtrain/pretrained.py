"""Backbone pretrained weights: resolve mmseg's ``open-mmlab://`` names, fetch them up front with a clear error
offline, or drop them for training from scratch."""
from __future__ import annotations

import urllib.parse
from pathlib import Path

import torch
from mmengine.runner.checkpoint import get_deprecated_model_names, get_external_models

from pseudolabel.download import DownloadError, download_file


class PretrainedUnavailableError(RuntimeError):
    """The ImageNet-pretrained backbone could not be found or downloaded."""


def pretrained_names(model_cfg: dict) -> list[str]:
    """The pretrained checkpoints a segmentor config asks for (``model.pretrained``, ``backbone.init_cfg``)."""
    names = [model_cfg.get("pretrained")]
    init_cfg = (model_cfg.get("backbone") or {}).get("init_cfg") or {}
    names.append(init_cfg.get("checkpoint") if isinstance(init_cfg, dict) else None)
    return [name for name in names if name]


def resolve_url(name: str) -> str | None:
    """The download URL of an ``open-mmlab://`` / ``http(s)://`` name; None for a local path."""
    if name.startswith(("http://", "https://")):
        return name
    for prefix in ("open-mmlab://", "openmmlab://"):
        if name.startswith(prefix):
            model = name[len(prefix):]
            model = get_deprecated_model_names().get(model, model)
            return get_external_models()[model]
    return None


def cached_path(url: str) -> Path:
    """Where mmengine (through torch's ``load_url``) looks for a downloaded checkpoint."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name


def ensure_pretrained(model_cfg: dict) -> list[Path]:
    """Make sure every pretrained checkpoint of ``model_cfg`` is on disk (download it now if needed); raise
    :class:`PretrainedUnavailableError` with the fix when that is impossible."""
    found = []
    for name in pretrained_names(model_cfg):
        url = resolve_url(name)
        if url is None:
            if not Path(name).is_file():
                raise PretrainedUnavailableError(f"pretrained checkpoint '{name}' does not exist; fix "
                                                 f"model.pretrained in the config or pass --no-pretrained")
            found.append(Path(name))
            continue
        target = cached_path(url)
        if not target.is_file():
            # resnet101_v1c-e67eebb6.pth: the name carries the first digits of its SHA-256 (torch hub's convention)
            expected = torch.hub.HASH_REGEX.search(target.name)
            try:  # now, with a timeout: torch's downloader, which mmengine uses, waits forever without internet
                download_file(url, target, expected[1] if expected else None)
            except DownloadError as error:
                raise PretrainedUnavailableError(
                    f"cannot get the pretrained backbone '{name}': {error}. Offline? Download it elsewhere and put it "
                    f"at {target} (or set TORCH_HOME), or train from scratch with --no-pretrained") from None
        found.append(target)
    return found


def drop_pretrained(model_cfg: dict) -> None:
    """Train from scratch: remove ``model.pretrained`` and the backbone's checkpoint ``init_cfg`` (in place)."""
    model_cfg["pretrained"] = None
    backbone = model_cfg.get("backbone") or {}
    if isinstance(backbone.get("init_cfg"), dict) and backbone["init_cfg"].get("type") == "Pretrained":
        backbone["init_cfg"] = None
