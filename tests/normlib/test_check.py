"""normlib.check: every checker passes normlib's own answer (NumPy and
torch), fails and names each wrong variant it knows, and explains a stub, an
error, a wrong kind, dtype, shape or count of outputs in a line or two."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from normlib import (
    _check_backward,
    _check_batch,
    _check_sample,
    _check_stats,
    check,
)

EXERCISES = {
    check.token_layer_norm: _check_sample.TOKEN_LAYER_NORM,
    check.group_norm: _check_sample.GROUP_NORM,
    check.batch_norm_forward: _check_batch.BATCH_NORM,
    check.batch_norm_backward: _check_backward.BATCH_NORM_BACKWARD,
    check.running_stats: _check_stats.RUNNING_STATS,
    check.layer_norm_backward: _check_backward.LAYER_NORM_BACKWARD,
    check.rms_norm: _check_sample.RMS_NORM,
    check.rms_norm_backward: _check_backward.RMS_NORM_BACKWARD,
    check.batch_norm_2d: _check_batch.BATCH_NORM_2D,
    check.masked_batch_norm: _check_batch.MASKED_BATCH_NORM,
    check.merge_shares: _check_stats.MERGE_SHARES,
}
CHECKERS = list(EXERCISES)
VARIANTS = [(checker, variant) for checker, exercise in EXERCISES.items()
            for variant in exercise.mistakes]
CHAPTERS = Path(__file__).resolve().parents[2] / "chapters"


def name_of(value):
    return getattr(value, "__name__", None)


def outputs_changed(checker, change):
    """The checker's reference with `change` applied to every output."""
    reference = EXERCISES[checker].reference

    def changed(*args):
        result = reference(*args)
        if isinstance(result, tuple):
            return tuple(change(out) for out in result)
        return change(result)
    return changed


def as_numpy(value):
    if torch.is_tensor(value):
        return value.numpy()
    if isinstance(value, dict):
        return {key: as_numpy(v) for key, v in value.items()}
    return value


def torch_twin(checker):
    """The reference as torch code: it refuses NumPy arrays, as torch code
    does, and returns tensors."""
    reference = EXERCISES[checker].reference

    def twin(*args):
        if isinstance(args[0], np.ndarray):
            raise TypeError("mean() got an unexpected keyword argument 'dim'")
        result = reference(*map(as_numpy, args))
        if isinstance(result, tuple):
            return tuple(map(torch.from_numpy, result))
        return torch.from_numpy(result)
    return twin


@pytest.mark.parametrize("checker", CHECKERS, ids=name_of)
def test_normlib_passes_with_numpy_and_torch(checker, capsys):
    for fn in (EXERCISES[checker].reference, torch_twin(checker)):
        verdict = checker(fn)
        assert verdict and verdict.status == "pass" and verdict.error < 1e-12
        assert ": pass, relative error" in capsys.readouterr().out


@pytest.mark.parametrize("checker, variant", VARIANTS,
                         ids=lambda v: name_of(v))
def test_every_wrong_variant_fails_and_is_named(checker, variant, capsys):
    verdict = checker(variant)
    assert not verdict and verdict.status == "fail"
    assert verdict.mistake == variant.__name__
    printed = capsys.readouterr().out
    assert printed.strip() == verdict.message
    assert " ".join(variant.__doc__.split()) in " ".join(printed.split())
    assert max(map(len, printed.splitlines())) <= 78


@pytest.mark.parametrize("checker", CHECKERS, ids=name_of)
def test_an_unknown_mistake_fails_without_a_name(checker):
    verdict = checker(outputs_changed(checker, lambda out: 1.5 * out + 0.1))
    assert verdict.status == "fail" and verdict.mistake is None
    assert "none of the mistakes" in verdict.message


@pytest.mark.parametrize("checker", CHECKERS, ids=name_of)
def test_a_stub_is_not_implemented_yet(checker):
    def stub(*args):
        raise NotImplementedError("fill this in")
    verdict = checker(stub)
    assert verdict.status == "not implemented" and not verdict
    assert verdict.message == ("stub: not implemented yet (it raises "
                               "NotImplementedError).")


@pytest.mark.parametrize("checker", CHECKERS, ids=name_of)
def test_a_wrong_dtype_is_one_line(checker):
    verdict = checker(outputs_changed(checker,
                                      lambda out: out.astype(np.float32)))
    assert verdict.status == "wrong output" and "\n" not in verdict.message
    assert "as float32; expected float64" in verdict.message


@pytest.mark.parametrize("checker", CHECKERS, ids=name_of)
def test_a_wrong_shape_is_one_line(checker):
    verdict = checker(outputs_changed(checker, lambda out: out[..., None]))
    assert verdict.status == "wrong output" and "\n" not in verdict.message
    assert re.search(r"of shape \(.*\); expected \(", verdict.message)


@pytest.mark.parametrize("checker", CHECKERS, ids=name_of)
def test_the_wrong_kind_is_one_line(checker):
    verdict = checker(outputs_changed(checker, lambda out: out.tolist()))
    assert verdict.status == "wrong output" and "\n" not in verdict.message
    assert "as list; expected a NumPy array" in verdict.message


def test_torch_code_that_returns_float32_is_told_so():
    def bn_forward(x, gamma, beta, eps):
        return torch.nn.functional.batch_norm(
            x.float(), None, None, gamma.float(), beta.float(), True, 0.0, eps)
    verdict = check.batch_norm_forward(bn_forward)
    assert verdict.message == ("bn_forward returned y as float32; expected "
                               "float64.")


def test_the_wrong_number_of_outputs():
    verdict = check.batch_norm_backward(lambda dy, cache: (dy, dy))
    assert verdict.status == "wrong output"
    assert "returned 2 value(s); expected 3: dx, dgamma, dbeta" in str(verdict)


def test_nan_in_the_output():
    verdict = check.rms_norm(outputs_changed(check.rms_norm,
                                             lambda out: out / 0.0 * 0.0))
    assert verdict.status == "wrong output" and "NaN" in verdict.message


def test_an_error_names_the_line_of_the_reader_code():
    def bn_forward(x, gamma, beta, eps):
        mean = x.mean(0)
        return x[:, 7] - mean
    verdict = check.batch_norm_forward(bn_forward)
    assert verdict.status == "raised" and "Traceback" not in verdict.message
    assert verdict.message.startswith("bn_forward raised IndexError: index 7")
    assert "(line 3: return x[:, 7] - mean)" in verdict.message


def test_torch_code_that_fails_on_tensors_too_gets_both_errors():
    def bn_forward(x, gamma, beta, eps):
        return x.mean(dim=0)[5]
    message = " ".join(check.batch_norm_forward(bn_forward).message.split())
    assert "on NumPy arrays, and IndexError" in message
    assert message.endswith("on torch tensors.")


def test_a_value_that_is_not_a_function():
    verdict = check.group_norm(np.zeros(3))
    assert verdict.status == "wrong output" and "takes a function" in str(
        verdict)


def test_real_torch_code_passes_and_its_one_pass_variance_is_named():
    def bn_forward(x, gamma, beta, eps):
        mean = x.mean(dim=0)
        return gamma * (x - mean) / torch.sqrt(
            x.var(dim=0, unbiased=False) + eps) + beta

    def one_pass(x, gamma, beta, eps):
        var = (x ** 2).mean(dim=0) - x.mean(dim=0) ** 2
        return gamma * (x - x.mean(dim=0)) / torch.sqrt(var + eps) + beta
    assert check.batch_norm_forward(bn_forward)
    assert check.batch_norm_forward(one_pass).mistake == "one_pass_variance"
    assert check.group_norm(lambda x, groups, eps: torch.nn.functional
                            .group_norm(x, groups, eps=eps))
    assert check.token_layer_norm(lambda x, eps: torch.nn.functional
                                  .layer_norm(x, x.shape[-1:], eps=eps))


def test_updating_the_arguments_in_place_does_no_harm():
    def update_running_stats(running_mean, running_var, x, momentum):
        running_mean *= 1 - momentum
        running_mean += momentum * x.mean(0)
        running_var *= 1 - momentum
        running_var += momentum * x.var(0, ddof=1)
        return running_mean, running_var
    assert check.running_stats(update_running_stats)


def test_forward_may_return_y_and_a_cache():
    reference = EXERCISES[check.batch_norm_forward].reference
    assert check.batch_norm_forward(lambda *args: (reference(*args), {}))


@pytest.mark.parametrize("checker", CHECKERS, ids=name_of)
def test_the_chapter_the_docstring_names_runs_the_checker(checker):
    match = re.search(r'Shown in chapter (\d+), "([^"]+)"\.', checker.__doc__)
    assert match, "a checker's docstring says where the book shows it"
    chapter, section = match.groups()
    call = f"check.{checker.__name__}("
    texts = {path: "".join("".join(cell["source"]) for cell in json.loads(
        path.read_text(encoding="utf-8"))["cells"])
        for path in CHAPTERS.rglob("*.ipynb")}
    calling = [path for path, text in texts.items() if call in text]
    assert len(calling) == 1, f"{call} should be in one chapter: {calling}"
    assert calling[0].name.startswith(f"{int(chapter):02d}_")
    assert f"## {section}" in texts[calling[0]]
