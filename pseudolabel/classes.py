"""Class sets: class names, CLIP prompt names, background words and the PASCAL palette.

The built-in lists live in the package, ``pseudolabel/class_lists/<name>.json`` (package data, so an installed wheel
has them); this module is the only place that reads them.
Label convention everywhere in the project: 0 = background, 1..C-1 = foreground classes, 255 = ignore.
"""
from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

REPO_DIR = Path(__file__).resolve().parents[1]
# Dataset roots and the demo photos: a source checkout's own data/; an installed package (no checkout around it)
# uses ./data of the working directory.
DATA_DIR = REPO_DIR / "data" if (REPO_DIR / "pyproject.toml").is_file() else Path("data")
CLASSES_DIR = Path(__file__).resolve().with_name("class_lists")
IGNORE_INDEX = 255
BUILTIN_CLASS_SETS = ("voc", "coco")


@dataclass(frozen=True)
class ClassSet:
    """Classes of one dataset.

    ``classes[0]`` is ``"background"``; ``prompt_names[i]`` is the CLIP prompt name of foreground class
    ``i + 1`` (CLIP-ES's names for VOC and COCO); ``extended_prompt_names`` are those names with synonyms or
    attributes added (the paper's Prompt3; the prompt names when a class list gives none); ``background_words`` are
    the extra CLIP-ES background prompts.
    """

    name: str
    classes: tuple[str, ...]
    prompt_names: tuple[str, ...]
    background_words: tuple[str, ...]
    category_ids: tuple[int, ...] = field(default=())  # COCO instances category id per foreground class
    extended_prompt_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.extended_prompt_names:
            object.__setattr__(self, "extended_prompt_names", self.prompt_names)
        if not self.classes or self.classes[0] != "background":
            raise ValueError(f"class set '{self.name}': the first class must be 'background'")
        if len(self.prompt_names) != len(self.classes) - 1:
            raise ValueError(
                f"class set '{self.name}': {len(self.prompt_names)} prompt names for "
                f"{len(self.classes) - 1} foreground classes"
            )
        if len(self.extended_prompt_names) != len(self.prompt_names):
            raise ValueError(f"class set '{self.name}': {len(self.extended_prompt_names)} extended prompt names for "
                             f"{len(self.prompt_names)} prompt names")
        if (twice := repeated_class(self.classes)) is not None:
            raise ValueError(f"class set '{self.name}': class '{twice}' is listed twice; remove one")
        if len(self.classes) > IGNORE_INDEX:
            raise ValueError(f"class set '{self.name}': at most {IGNORE_INDEX - 1} foreground classes")

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.classes)

    def index(self, name: str) -> int:
        """Class index of a class name (``KeyError`` naming the known classes when unknown)."""
        try:
            return self.classes.index(name)
        except ValueError:
            raise KeyError(
                f"unknown class '{name}' for class set '{self.name}'; known: {', '.join(self.classes[1:])}"
            ) from None

    def to_json(self) -> dict:
        """JSON-serialisable form (stored in shard attributes)."""
        return {
            "name": self.name,
            "classes": list(self.classes),
            "prompt_names": list(self.prompt_names),
            "extended_prompt_names": list(self.extended_prompt_names),
            "background_words": list(self.background_words),
            "category_ids": list(self.category_ids),
        }

    @classmethod
    def from_json(cls, data: dict) -> "ClassSet":
        return cls(
            name=data["name"],
            classes=tuple(data["classes"]),
            prompt_names=tuple(data.get("prompt_names") or data["classes"][1:]),
            background_words=tuple(data.get("background_words", ())),
            category_ids=tuple(data.get("category_ids", ())),
            extended_prompt_names=tuple(data.get("extended_prompt_names", ())),
        )

    @classmethod
    def from_file(cls, path: str | Path, name: str = "custom") -> "ClassSet":
        """Read a class list: a JSON file like ``pseudolabel/class_lists/voc.json``, or a text file with one
        foreground class per line (``background`` is prepended if missing; prompt names = class names;
        background words = the VOC ones)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"class list '{path}' does not exist; give a .txt (one class per line) or .json file")
        text = path.read_text(encoding="utf-8-sig")  # a BOM (spreadsheet programs write one) is not a class name
        if path.suffix == ".json":
            data = json.loads(text)
            if (twice := repeated_class(data.get("classes") or [])) is not None:
                raise ValueError(f"class list '{path}': class '{twice}' is listed twice; remove one")
            data.setdefault("name", name)
            data.setdefault("background_words", list(get_class_set("voc").background_words))
            return cls.from_json(data)
        names = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not names:
            raise ValueError(f"class list '{path}' names no class")
        if (twice := repeated_class(names)) is not None:
            raise ValueError(f"class list '{path}': class '{twice}' is listed twice; remove one of its lines")
        if names[0] != "background":
            names = ["background"] + names
        return cls(name, tuple(names), tuple(names[1:]), get_class_set("voc").background_words)


def class_name_key(name: str) -> str:
    """A class name as compared between class lists: case, spaces and punctuation ignored ('Potted plant' and
    'pottedplant' match; Unicode normal forms too)."""
    return "".join(ch for ch in unicodedata.normalize("NFC", name).lower() if ch.isalnum())


def repeated_class(names: Sequence[str]) -> str | None:
    """The first class name that repeats an earlier one as :func:`class_name_key` compares them, or None."""
    seen = set()
    for name in names:
        if class_name_key(name) in seen:
            return name
        seen.add(class_name_key(name))
    return None


@lru_cache(maxsize=None)
def get_class_set(name: str) -> ClassSet:
    """The built-in class set ``voc`` or ``coco``."""
    if name not in BUILTIN_CLASS_SETS:
        raise KeyError(f"no built-in class set '{name}'; choose one of {BUILTIN_CLASS_SETS} or use ClassSet.from_file")
    return ClassSet.from_json(json.loads((CLASSES_DIR / f"{name}.json").read_text()))


def pascal_palette(num_entries: int = 256) -> np.ndarray:
    """The standard PASCAL VOC colour map, ``(num_entries, 3) uint8`` (index 255 is (224, 224, 192))."""
    palette = np.zeros((num_entries, 3), dtype=np.uint8)
    for index in range(num_entries):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (r, g, b)
    return palette
