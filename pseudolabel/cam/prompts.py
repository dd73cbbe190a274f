"""Text prompts for CLIP (the paper's Table 9 prompt sets) and the text embeddings they give."""
from __future__ import annotations

import torch

from pseudolabel.classes import ClassSet

CLIP_ENSEMBLE_TEMPLATES = (  # CLIP's 7-template ensemble
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)
PROMPT_SETS = {
    # name: (templates, use CLIP-ES prompt names (True) or plain class names (False))
    "clipes": (("a clean origami {}.",), True),            # Prompt1 (default), CLIP-ES
    "ensemble": (CLIP_ENSEMBLE_TEMPLATES, False),          # Prompt2: CLIP templates, plain names
    "descriptive": (("a photo of a {}, a kind of object.",), True),  # Prompt3: synonyms/attributes in the names
    "ensemble_clipes": (CLIP_ENSEMBLE_TEMPLATES, True),    # Prompt4: CLIP templates, CLIP-ES names
}


def prompt_texts(class_set: ClassSet, prompt_set: str = "clipes") -> tuple[list[list[str]], list[list[str]]]:
    """Prompt strings per foreground class and per background word, for one prompt set."""
    if prompt_set not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set '{prompt_set}'; choose one of {tuple(PROMPT_SETS)}")
    templates, clipes_names = PROMPT_SETS[prompt_set]
    names = class_set.prompt_names if clipes_names else class_set.classes[1:]
    foreground = [[t.format(n) for t in templates] for n in names]
    background = [[t.format(w) for t in templates] for w in class_set.background_words]
    return foreground, background


@torch.no_grad()
def text_embeddings(model, tokenizer, prompts: list[list[str]], device) -> torch.Tensor:
    """L2-normalised text embeddings averaged over templates and re-normalised: ``(len(prompts), E)``."""
    flat = [p for group in prompts for p in group]
    features = model.encode_text(tokenizer(flat).to(device)).float()
    features = features / features.norm(dim=-1, keepdim=True)
    features = features.view(len(prompts), -1, features.shape[-1]).mean(dim=1)
    return features / features.norm(dim=-1, keepdim=True)
