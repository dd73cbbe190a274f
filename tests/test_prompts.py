"""The paper's Table 9 prompt settings: exact strings, the alias, the class files' extended names."""
import pytest
import torch

from pseudolabel.cam.prompts import prompt_texts
from pseudolabel.cam.skipcam import SkipCAMConfig
from pseudolabel.classes import ClassSet, get_class_set
from tests.fixtures.tiny_clip import tiny_skipcam

CLIP_SEVEN = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
              "a {} in a video game.", "art of the {}.", "a photo of the small {}.")


@pytest.mark.parametrize("setting, aeroplane, bird", [
    ("prompt1", ["a clean origami aeroplane."], ["a clean origami bird avian."]),
    ("prompt2", [t.format("aeroplane") for t in CLIP_SEVEN], [t.format("bird avian") for t in CLIP_SEVEN]),
    ("prompt3", ["a clean origami aeroplane,airplane."], ["a clean origami bird avian with wings."]),
    ("prompt4", [t.format("aeroplane,airplane") for t in CLIP_SEVEN],
     [t.format("bird avian with wings") for t in CLIP_SEVEN]),
])
def test_exact_prompt_strings_of_each_setting(setting, aeroplane, bird):
    voc = get_class_set("voc")
    foreground, background = prompt_texts(voc, setting)
    assert foreground[voc.index("aeroplane") - 1] == aeroplane and foreground[voc.index("bird") - 1] == bird
    templates = CLIP_SEVEN if setting in ("prompt2", "prompt4") else ("a clean origami {}.",)
    assert background == [[t.format(w) for t in templates] for w in voc.background_words]  # words never change
    assert len(foreground) == 20 and len(background) == 25


def test_clipes_is_another_name_for_prompt1_and_is_stored_as_prompt1():
    voc = get_class_set("voc")
    assert prompt_texts(voc, "clipes") == prompt_texts(voc, "prompt1")
    assert SkipCAMConfig(prompt_set="clipes", clip_weights="random").prompt_set == "prompt1"
    assert SkipCAMConfig(clip_weights="random").prompt_set == "prompt1"
    with pytest.raises(ValueError, match="unknown prompt set 'ensemble'.*prompt4"):
        SkipCAMConfig(prompt_set="ensemble", clip_weights="random")


def test_class_files_extend_every_prompt_name():
    for name, count in (("voc", 20), ("coco", 80)):
        classes = get_class_set(name)
        assert len(classes.extended_prompt_names) == count
        for plain, extended in zip(classes.prompt_names, classes.extended_prompt_names):
            assert extended.startswith(plain) and len(extended) > len(plain)  # Prompt1's name, then the additions
    custom = ClassSet("custom", ("background", "cat"), ("cat",), ("grass",))
    assert custom.extended_prompt_names == ("cat",)  # no synonyms given: the prompt names
    assert ClassSet.from_json(custom.to_json()) == custom


def test_the_setting_reaches_the_text_embeddings():
    texts = {s: tiny_skipcam(prompt_set=s) for s in ("prompt1", "prompt2", "prompt3", "prompt4")}
    for a in texts:
        for b in texts:
            if a < b:
                assert not torch.allclose(texts[a].fg_text, texts[b].fg_text)
    assert torch.equal(texts["prompt1"].bg_text, texts["prompt3"].bg_text)
