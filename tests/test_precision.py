"""--precision: fp32 is true float32 in the encoders (TF32 off where cuDNN would use it), tf32 turns TF32 on there
only, the rest of a run computes in float32; a CPU ignores it."""
import warnings

import pytest
import torch

from pseudolabel.precision import PRECISIONS, effective_precision, encoder_precision, use_fp32_math


@pytest.fixture
def tf32_flags():
    """Restore the process's TF32 settings after a test changes them."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("precision, inside", [("fp32", (False, False)), ("tf32", (True, True)),
                                               ("bf16", (False, False)), ("fp16", (False, False))])
def test_the_encoder_math_on_cuda_is_what_the_precision_says_and_is_restored(precision, inside, tf32_flags):
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True   # torch's own defaults
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # autocast("cuda") warns on a machine without CUDA, and still applies
        with encoder_precision("cuda:0", precision):
            assert flags() == inside
            if precision in ("bf16", "fp16") and torch.cuda.is_available():
                assert torch.get_autocast_dtype("cuda") == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert flags() == (False, True)


def test_a_run_on_cuda_turns_tf32_off_outside_the_encoders_and_a_cpu_run_changes_nothing(tf32_flags):
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
    use_fp32_math("cpu")
    with encoder_precision("cpu", "tf32"):
        assert flags() == (False, True)
    use_fp32_math("cuda:1")
    assert flags() == (False, False)


def test_every_precision_is_accepted_on_cuda_and_is_fp32_on_a_cpu():
    for precision in PRECISIONS:
        assert effective_precision(precision, "cuda") == (precision, None)
        used, note = effective_precision(precision, "cpu")
        assert used == "fp32" and (note is None) == (precision == "fp32")
    with pytest.raises(ValueError, match="tf32"):
        effective_precision("int8", "cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp32_convolutions_are_true_float32_and_tf32_ones_are_not(tf32_flags):
    """A convolution as SAM's patch embedding has it (16x16 stride 16, 3 -> 768 channels) against float64 on the
    CPU: fp32 within float32 rounding, tf32 visibly coarser (TF32 keeps 10 mantissa bits)."""
    torch.backends.cudnn.allow_tf32 = True                      # cuDNN's default, which fp32 must override
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 256, 256, generator=generator, dtype=torch.float64)
    w = torch.randn(768, 3, 16, 16, generator=generator, dtype=torch.float64)
    reference = torch.nn.functional.conv2d(x, w, stride=16)
    errors = {}
    for precision in ("fp32", "tf32"):
        with encoder_precision("cuda", precision):
            out = torch.nn.functional.conv2d(x.float().cuda(), w.float().cuda(), stride=16)
        errors[precision] = ((out.double().cpu() - reference).abs().max() / reference.abs().max()).item()
    assert errors["fp32"] < 1e-6 and errors["tf32"] > 1e-5, errors
