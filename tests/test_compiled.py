"""--compile: the image encoders through torch.compile give the eager run's labels up to rounding, and the run log
says the encoders were compiled."""

import numpy as np
import torch

from pseudolabel.compiled import compile_encoders, is_compiled
from pseudolabel.generate import run
from tests.fixtures.outputs import stored_labels
from tests.fixtures.tiny_datasets import make_voc

TINY = ["--clip-model", "ViT-T-16-cep-test-quickgelu", "--clip-weights", "random", "--sam-model", "vit_tiny_test",
        "--sam-checkpoint", "random", "--device", "cpu"]


def test_compiled_encoders_label_as_the_eager_ones(tmp_path):
    voc = make_voc(tmp_path / "data", n_train=2, n_val=0, size=(40, 56))
    outputs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        outputs[name] = tmp_path / name
        run(["voc", "--data-root", str(voc), "--split", "train", "--out", str(outputs[name]), *TINY, *extra])
    eager, compiled = stored_labels(outputs["eager"]), stored_labels(outputs["compiled"])
    assert eager.keys() == compiled.keys()
    for image_id, (refined, initial, maps) in eager.items():
        got_refined, got_initial, got_maps = compiled[image_id]
        np.testing.assert_allclose(got_maps, maps, atol=1e-3)
        assert np.mean(got_refined == refined) > 0.99 and np.mean(got_initial == initial) > 0.99
    assert '"compiled encoders": true' in (outputs["compiled"] / "run.log").read_text()


def test_compiling_twice_leaves_a_compiled_encoder_as_it_is():
    class Refiner:
        class predictor:
            model = torch.nn.Module()

    class Cam:
        def frozen_blocks(self, pixels):
            return pixels

    cam, refiner = Cam(), Refiner()
    refiner.predictor.model.image_encoder = torch.nn.Linear(2, 2)
    compile_encoders(cam, refiner)
    first = cam.frozen_blocks, refiner.predictor.model.image_encoder
    assert is_compiled(first[0]) and is_compiled(first[1])
    compile_encoders(cam, refiner)
    assert (cam.frozen_blocks, refiner.predictor.model.image_encoder) == first
