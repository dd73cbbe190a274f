"""Stage one's models for one or more settings (``tools/gen_pseudo.sh``: one, ``tools/ablate.sh``: every row's): each
CLIP model and SAM predictor loaded once, one :class:`~pseudolabel.cam.skipcam.SkipCAM` per Skip-CAM setting and one
:class:`~pseudolabel.sam.refine.SAMRefiner` per refinement setting."""
from __future__ import annotations

import functools
import json

import torch

from pseudolabel.cam.clip_models import load_clip
from pseudolabel.cam.skipcam import SkipCAM
from pseudolabel.classes import ClassSet
from pseudolabel.config import PseudoLabelConfig
from pseudolabel.pipeline import Setting
from pseudolabel.sam.refine import POINTS_PER_BATCH, SAMRefiner, load_predictor


class ModelPool:
    """The models of a run's settings, each loaded once. Building a setting checks it (e.g. K against the model's
    depth), so a sweep builds every row's before any image."""

    def __init__(self, class_set: ClassSet, device: str, points_per_batch: int = POINTS_PER_BATCH):
        self.class_set, self.device, self.points_per_batch = class_set, device, points_per_batch
        self.clip = functools.cache(lambda name, weights, seed: load_clip(name, weights, device, seed))  # by model
        self.texts: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.cams: dict[str, SkipCAM] = {}
        self.predictors: dict[tuple, tuple] = {}
        self.refiners: dict[tuple, SAMRefiner] = {}

    def setting(self, config: PseudoLabelConfig) -> Setting:
        """The Skip-CAM and (refinement on) the SAM refiner of ``config``."""
        return Setting(self.skipcam(config), self.refiner(config))

    def skipcam(self, config: PseudoLabelConfig) -> SkipCAM:
        """The Skip-CAM of ``config``, sharing the text embeddings of an earlier one on its model and prompt set."""
        cam = config.cam
        key = json.dumps({**cam.to_dict(), "precision": config.precision}, sort_keys=True)
        if key not in self.cams:
            model, tokenizer, weights = self.clip(cam.clip_model, cam.clip_weights, cam.clip_seed)
            text_key = (cam.clip_model, cam.clip_weights, cam.clip_seed, cam.prompt_set)
            skipcam = SkipCAM(model, tokenizer, self.class_set, cam, self.device, weights, config.precision,
                              self.texts.get(text_key))
            self.texts[text_key] = (skipcam.fg_text, skipcam.bg_text)
            self.cams[key] = skipcam
        return self.cams[key]

    def refiner(self, config: PseudoLabelConfig) -> SAMRefiner | None:
        """The SAM refiner of ``config`` on the one predictor of its model and precision; None without refinement."""
        if not config.refine.enabled:
            return None
        refine = config.refine
        model_key = (refine.sam_model, refine.sam_checkpoint, refine.sam_seed, config.precision)
        key = (model_key, json.dumps(refine.to_dict(), sort_keys=True))
        if key not in self.refiners:
            if model_key not in self.predictors:
                self.predictors[model_key] = load_predictor(refine, self.device, config.precision)
            predictor, weights = self.predictors[model_key]
            self.refiners[key] = SAMRefiner(predictor, refine, weights, self.points_per_batch)
        return self.refiners[key]
