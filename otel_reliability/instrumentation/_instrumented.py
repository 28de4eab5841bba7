"""The instrumentor idiom, in one place: how an instrumentor knows it has patched something.

Patches are wrapt's ``wrap_function_wrapper`` and undone by ``opentelemetry.instrumentation.utils.unwrap``, as in
the contrib instrumentors.
"""

from __future__ import annotations

from typing import Any

try:  # wrapt 2: FunctionWrapper derives from BaseObjectProxy, not from the ObjectProxy it exports
    from wrapt import BaseObjectProxy as _Proxy  # type: ignore[attr-defined]
except ImportError:  # wrapt 1
    from wrapt import ObjectProxy as _Proxy


def is_wrapped(owner: Any, attr: str) -> bool:
    """Whether ``owner`` itself (not a base class) holds a wrapt wrapper as ``attr``: instrumenting twice must
    not wrap twice, and ``unwrap`` restores exactly one layer."""
    return isinstance(vars(owner).get(attr), _Proxy)
