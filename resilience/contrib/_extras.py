"""The ImportError every contrib module raises when its extra is missing.

A bare ``No module named 'httpx'`` does not say that the fix is an extra of
this distribution, nor what the distribution is called (it is not
``resilience``: that name on the package index is another project's).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DISTRIBUTION", "install_hint", "needs_extra"]

DISTRIBUTION = "resilience-policies"
"""The name to ``pip install``; the import name stays ``resilience``."""


def install_hint(extra: str) -> str:
    """The command that installs ``extra``, quoted for any shell."""
    return f'pip install "{DISTRIBUTION}[{extra}]"'


@contextmanager
def needs_extra(module: str, extra: str) -> Iterator[None]:
    """Turn a missing third-party module, imported in the block, into a
    ModuleNotFoundError (still an ImportError) that names the extra to install.

    Example::

        with needs_extra(__name__, "httpx"):
            import httpx
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"{module} needs the {extra!r} extra ({exc.name} is missing): {install_hint(extra)}",
            name=exc.name,
        ) from exc
