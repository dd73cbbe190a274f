"""Text prompts for CLIP (the paper's Table 9 prompt settings) and the text embeddings they give.

- ``prompt1`` (default; also called ``clipes``): CLIP-ES's prefix ``a clean origami {}.`` with CLIP-ES's class names
  (``bird avian``, ``person with clothes,people,human``, ...) and background words.
- ``prompt2``: Prompt1 with the prefix set replaced by CLIP's seven templates; the names stay Prompt1's.
- ``prompt3``: Prompt1 with synonyms or attributes added to the foreground names (``ClassSet.extended_prompt_names``).
- ``prompt4``: Prompt2's templates with Prompt3's names.
The background words are the same in every setting.
"""
from __future__ import annotations

import logging

import torch

from pseudolabel.classes import ClassSet

LOG = logging.getLogger(__name__)
CLIPES_TEMPLATES = ("a clean origami {}.",)
CLIP_TEMPLATES = (  # the seven templates the paper takes from CLIP
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)
PROMPT_SETS = {  # name: (templates, foreground names with synonyms/attributes added)
    "prompt1": (CLIPES_TEMPLATES, False),
    "prompt2": (CLIP_TEMPLATES, False),
    "prompt3": (CLIPES_TEMPLATES, True),
    "prompt4": (CLIP_TEMPLATES, True),
}
PROMPT_SET_ALIASES = {"clipes": "prompt1"}


def canonical_prompt_set(name: str) -> str:
    """The setting's canonical name (``clipes`` -> ``prompt1``); unknown names raise ``ValueError``."""
    name = PROMPT_SET_ALIASES.get(name, name)
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set '{name}'; choose one of {tuple(PROMPT_SETS) + tuple(PROMPT_SET_ALIASES)}")
    return name


def prompt_texts(class_set: ClassSet, prompt_set: str = "prompt1") -> tuple[list[list[str]], list[list[str]]]:
    """Prompt strings per foreground class and per background word, for one prompt setting."""
    templates, extended = PROMPT_SETS[canonical_prompt_set(prompt_set)]
    names = class_set.extended_prompt_names if extended else class_set.prompt_names
    if extended and names == class_set.prompt_names:
        LOG.warning("class set '%s' has no extended prompt names: %s uses its prompt names unchanged",
                    class_set.name, prompt_set)
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
