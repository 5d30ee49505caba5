"""Showing the code a chapter runs, printed from its one source."""
import importlib
import inspect
import textwrap


def show_source(target):
    """Print the source of a function, class or method, dedented.

    `target` is the object itself, or "module:Qualified.name" for code that a
    chapter runs but does not import, such as a library's private helper
    ("normlib._syncbatchnorm:_SyncBatchNormFunction.backward").
    """
    if isinstance(target, str):
        module, _, qualname = target.partition(":")
        target = importlib.import_module(module)
        for name in qualname.split("."):
            target = getattr(target, name)
    print(textwrap.dedent(inspect.getsource(target)))
