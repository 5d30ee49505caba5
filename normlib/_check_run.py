"""How `normlib.check` judges a reader's function: the fixed inputs, the
comparison with normlib in float64, and the verdict in a few printed lines.

`normlib.check` is where to find the checkers; the exercises they run live
in `_check_batch.py`, `_check_stats.py`, `_check_sample.py` and
`_check_backward.py`.
"""
import textwrap
import traceback
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Case:
    """One fixed input: the arguments as NumPy arrays and numbers, and the
    relative error a correct float64 function stays under on it."""
    args: tuple
    tol: float = 1e-9
    offset: bool = False    # values far from 0, where E[x^2] - E[x]^2 fails


OFFSET = dict(tol=1e-6, offset=True)    # a Case's settings far from 0


@dataclass
class Exercise:
    """What a checker knows: a correct function written as the reader's
    (NumPy, around normlib), the inputs, and the usual wrong variants."""
    reference: object
    cases: list
    mistakes: list          # wrong variants; each one's docstring says why
    outputs: tuple = ("y",)
    call: object = None     # call(fn, *args): how a case's args reach fn
    compare_at: object = None   # compare_at(*args): positions that count


def symptom(variant):
    """Mark a variant that is named by its symptom, not by matching it: its
    error is rounding, which no other code reproduces digit for digit.  It
    is right on the inputs near 0 and wrong on the ones with an offset."""
    variant.by_symptom = True
    return variant


@dataclass
class Verdict:
    """What a check found.  True when the function passed."""
    name: str
    status: str     # pass, fail, not implemented, raised, wrong output
    message: str
    error: float = None     # the largest relative error over the inputs
    mistake: str = None     # the name of the wrong variant it matches

    def __bool__(self):
        return self.status == "pass"

    def __str__(self):
        return self.message

    def _ipython_display_(self):
        """Nothing more to show in a notebook: the check printed it."""


def run(fn, exercise):
    """Judge fn on the exercise's inputs, print the verdict, return it."""
    verdict = judge(fn, exercise)
    print(verdict.message)
    return verdict


def judge(fn, exercise):
    """The Verdict on fn, without printing it."""
    name = getattr(fn, "__name__", "your function")
    cases = exercise.cases
    wants = [_outputs(_call(exercise, exercise.reference, c.args),
                      len(exercise.outputs)) for c in cases]
    got, stop = _outputs_of(fn, exercise, name, wants)
    if stop is not None:
        return stop
    errors = [_relative_error(exercise, c, mine, want)
              for c, mine, want in zip(cases, got, wants)]
    worst = max(errors)
    against = f"relative error {worst:.1e} against normlib"
    if all(e <= c.tol for e, c in zip(errors, cases)):
        return Verdict(name, "pass", _wrap(f"{name}: pass, {against}."),
                       worst)
    variant = _matching_variant(exercise, got, errors)
    if variant is None:
        why = ("It matches none of the mistakes this check knows: compare "
               "it with the formula, one step at a time.")
    else:
        why = "It matches a known mistake: " + " ".join(
            variant.__doc__.split())
    return Verdict(name, "fail", _wrap(f"{name}: fail, {against}.") + "\n"
                   + _wrap(why), worst,
                   None if variant is None else variant.__name__)


# ---- calling the reader's function --------------------------------------

def _call(exercise, fn, args, kind="numpy"):
    args = tuple(_as_kind(a, kind) for a in args)      # fresh copies
    with np.errstate(all="ignore"):
        if exercise.call is None:
            return fn(*args)
        return exercise.call(fn, *args)


def _as_kind(value, kind):
    if not isinstance(value, np.ndarray):
        return value
    return value.copy() if kind == "numpy" else torch.tensor(value)


def _attempt(exercise, fn, args, kind):
    try:
        return _call(exercise, fn, args, kind), None
    except Exception as error:      # the reader's code: anything can happen
        return None, error


def _outputs_of(fn, exercise, name, wants):
    """fn's outputs on every case as NumPy tuples, or a Verdict that says
    why there are none.  NumPy arrays first; torch tensors if fn fails on
    the first arrays the way torch code does."""
    if not callable(fn):
        return None, Verdict(name, "wrong output", _wrap(
            f"The check takes a function; it got a {type(fn).__name__}."))
    kind, got = "numpy", []
    for case, want in zip(exercise.cases, wants):
        result, error = _attempt(exercise, fn, case.args, kind)
        if not got and isinstance(error, (TypeError, AttributeError)):
            result, torch_error = _attempt(exercise, fn, case.args, "torch")
            if torch_error is None:
                kind, error = "torch", None
            elif isinstance(torch_error, NotImplementedError):
                error = torch_error
            else:
                return None, _raised(name, fn, error, torch_error)
        if error is not None:
            return None, _raised(name, fn, error)
        outputs, problem = _checked(result, want, kind, exercise.outputs)
        if problem:
            return None, Verdict(name, "wrong output",
                                 _wrap(f"{name} {problem}."))
        got.append(outputs)
    return got, None


def _raised(name, fn, error, torch_error=None):
    if isinstance(error, NotImplementedError):
        return Verdict(name, "not implemented", _wrap(
            f"{name}: not implemented yet (it raises NotImplementedError)."))
    text = f"{name} raised {_one_line(error, fn)}"
    if torch_error is not None:
        text += (f" on NumPy arrays, and {_one_line(torch_error, fn)} on "
                 f"torch tensors")
    return Verdict(name, "raised", _wrap(text + "."))


def _one_line(error, fn):
    """'ValueError: the message's first line (line 3: the code)', the line
    being the last one of fn's own code that the error went through."""
    message = str(error).strip()
    text = type(error).__name__
    if message:
        text += ": " + message.splitlines()[0]
    code = getattr(fn, "__code__", None)
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if code is not None and f.filename == code.co_filename]
    if frames and frames[-1].line:
        line = frames[-1].lineno - code.co_firstlineno + 1
        text += f" (line {line}: {frames[-1].line.strip()})"
    return text


# ---- what came back ------------------------------------------------------

def _outputs(result, count):
    """The outputs as a tuple; a forward's (y, cache) counts as y."""
    if count == 1:
        return (result[0] if isinstance(result, tuple) and result
                else result,)
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def _checked(result, want, kind, names):
    """(the outputs as float64 NumPy arrays, None) or (None, the problem)."""
    outputs = _outputs(result, len(names))
    if len(outputs) != len(names):
        return None, (f"returned {len(outputs)} value(s); expected "
                      f"{len(names)}: {', '.join(names)}")
    array, kind_name = ((np.ndarray, "a NumPy array") if kind == "numpy"
                        else (torch.Tensor, "a torch tensor"))
    arrays = []
    for out, expected, label in zip(outputs, want, names):
        if not isinstance(out, array):
            return None, (f"returned {label} as {type(out).__name__}; "
                          f"expected {kind_name}")
        dtype = str(out.dtype).removeprefix("torch.")
        if dtype != "float64":
            return None, f"returned {label} as {dtype}; expected float64"
        if tuple(out.shape) != tuple(expected.shape):
            return None, (f"returned {label} of shape {tuple(out.shape)}; "
                          f"expected {tuple(expected.shape)}")
        out = out.detach().cpu().numpy() if kind == "torch" else out
        if not np.isfinite(out).all():
            return None, f"returned {label} with NaN or inf values in it"
        arrays.append(out)
    return tuple(arrays), None


def _relative_error(exercise, case, got, want):
    """The largest, over the outputs, of |got - want| / |want| (2-norms),
    at the positions that count."""
    if exercise.compare_at is not None:
        where = exercise.compare_at(*case.args)
        got, want = ([np.where(where, a, 0.0) for a in arrays]
                     for arrays in (got, want))
    worst = 0.0
    with np.errstate(all="ignore"):
        for a, b in zip(got, want):
            error = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)
            worst = max(worst, error if np.isfinite(error) else np.inf)
    return worst


def _matching_variant(exercise, got, errors):
    """The first wrong variant whose outputs fn's match on every input."""
    cases = exercise.cases
    for variant in exercise.mistakes:
        if getattr(variant, "by_symptom", False):
            near = [e <= c.tol for e, c in zip(errors, cases) if not c.offset]
            far = [e > c.tol for e, c in zip(errors, cases) if c.offset]
            if near and all(near) and any(far):
                return variant
            continue
        theirs = [_outputs(_call(exercise, variant, c.args),
                           len(exercise.outputs)) for c in cases]
        if all(_relative_error(exercise, c, mine, their) <= c.tol
               for c, mine, their in zip(cases, got, theirs)):
            return variant
    return None


def _wrap(text):
    return textwrap.fill(text, 70)  # fits an exercise box (~73 columns)
