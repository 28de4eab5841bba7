"""The instrumentor idiom, in one place: what is active while instrumented, and what is patched.

- ``Instrumented``: what an instrumentor's ``instrument()`` set up (its instruments, sampler, telemetry), held
  until ``uninstrument()``. OpenTelemetry cannot remove an instrument, and creating one again on the same meter
  returns the first one with its callbacks; so every callback and hook asks ``state`` (None: report nothing) or
  is made with ``gate``. One way for every instrumentor, instead of a class flag, an identity check, a closure
  over a module global or a global reset each.
- Patches are wrapt's ``wrap_function_wrapper``, undone by ``opentelemetry.instrumentation.utils.unwrap`` (the
  contrib convention); ``is_wrapped`` tells whether a class already holds our wrapper. On a path that runs on
  every request (a pool checkout, a statement), a patch is an ``override`` instead, undone by ``restore``: a
  plain function with the method's own signature, which costs ~30 ns a call where a wrapt wrapper costs ~800
  (wrapt 2.5 here: a bound wrapper is made on each attribute lookup and the call goes through it). FastAPI's
  ``__init__`` and ``build_middleware_stack`` are wrapped once for the whole package, in ``fastapi_app``, which
  runs the hooks the instrumentors register there.
- A method wrapped on a base class misses subclasses that define their own version (``SingletonThreadPool.connect``,
  ``psycopg2``'s ``do_executemany``): ``classes_defining`` finds those to wrap too; when such an override calls
  ``super()``, only the outermost patch may act, or the call would be measured twice: ``outermost`` tells a patch
  whether it is that one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_reliability.upstream.runtime import suppressed

__all__ = ["suppressed"]  # ``not is_instrumentation_enabled()`` at half its cost (asked on every statement)

T = TypeVar("T")
Callback = Callable[[CallbackOptions], Iterable[Observation]]

try:  # wrapt 2: FunctionWrapper derives from BaseObjectProxy, not from the ObjectProxy it exports
    from wrapt import BaseObjectProxy as _Proxy  # type: ignore[attr-defined]
except ImportError:  # wrapt 1
    from wrapt import ObjectProxy as _Proxy


def is_wrapped(owner: Any, attr: str) -> bool:
    """Whether ``owner`` itself (not a base class) holds a wrapt wrapper as ``attr``: instrumenting twice must
    not wrap twice, and ``unwrap`` restores exactly one layer."""
    return isinstance(vars(owner).get(attr), _Proxy)


def unwrap_own(owner: type, attr: str) -> None:
    """Undo ``wrap_function_wrapper`` on ``owner`` and leave the class as it was: a method it inherited is
    inherited again (contrib's ``unwrap`` would copy the base class's function into ``owner``). Nothing if
    ``owner`` itself holds no wrapt wrapper as ``attr``."""
    current = vars(owner).get(attr)
    if not isinstance(current, _Proxy):
        return
    original = current.__wrapped__
    inherited = next((vars(base)[attr] for base in owner.__mro__[1:] if attr in vars(base)), None)
    if original is inherited:
        delattr(owner, attr)
    else:
        setattr(owner, attr, original)


_OVERRIDE = "_otel_reliability_override"


def override(owner: type, attr: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Replace the function ``owner`` itself defines as ``attr`` by ``make(original)``; ``restore`` puts the
    original back. Idempotent: an override is never overridden again."""
    original = owner.__dict__[attr]
    if getattr(original, _OVERRIDE, False):
        return
    replacement = make(original)
    replacement.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(replacement, _OVERRIDE, True)
    setattr(owner, attr, replacement)


def restore(owner: type, attr: str) -> None:
    """Undo ``override`` (nothing if ``owner.attr`` is not our override)."""
    current = owner.__dict__.get(attr)
    if getattr(current, _OVERRIDE, False):
        setattr(owner, attr, current.__wrapped__)  # type: ignore[union-attr]


class Instrumented(Generic[T]):
    """``state``: what the current ``instrument()`` set up, or None while not instrumented; ``meter``: the meter
    it created its instruments on.

    ``state`` is a plain attribute: a hot path reads it once (``tel = X.state``) and does nothing when it is None.
    """

    __slots__ = ("meter", "state")

    def __init__(self) -> None:
        self.state: T | None = None
        self.meter: Meter | None = None

    def start(self, state: T, meter: Meter | None = None) -> T:
        """Called by ``_instrument``: ``state`` is what is active from now on, on ``meter``."""
        self.state, self.meter = state, meter
        return state

    def stop(self) -> T | None:
        """Called by ``_uninstrument``: nothing is active any more; returns what was."""
        state, self.state, self.meter = self.state, None, None
        return state

    def active_on(self, meter: Meter) -> bool:
        """Whether instrumented now, on ``meter`` (the SDK returns the same meter for the same provider and scope:
        a callback created on another provider, by an earlier ``instrument()``, must stay quiet)."""
        return self.state is not None and self.meter is meter

    def gate(self, meter: Meter, observe: Callable[[T, CallbackOptions], Iterable[Observation]]) -> Callback:
        """An observable callback for an instrument created on ``meter``: ``observe(state, options)`` with the
        *current* state while instrumented on ``meter``, nothing otherwise. (Creating an instrument again on the
        same meter keeps the first one's callbacks, so a callback must never hold on to the state of the
        ``instrument()`` that created it.)"""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            state = self.state
            if state is None or self.meter is not meter:
                return []
            return observe(state, options)

        return callback


_definers: dict[tuple[type, str], type | None] = {}


def classes_defining(base: type, attr: str) -> Iterator[type]:
    """``base`` and its subclasses (imported so far) whose own ``__dict__`` defines ``attr``."""
    seen: set[type] = set()
    stack = [base]
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if attr in cls.__dict__:
            yield cls
        stack.extend(cls.__subclasses__())


def definer(cls: type, attr: str) -> type | None:
    """The class whose ``attr`` an instance of ``cls`` calls (the first in its MRO that defines it); cached."""
    key = (cls, attr)
    try:
        return _definers[key]
    except KeyError:
        found = next((klass for klass in cls.__mro__ if attr in klass.__dict__), None)
        _definers[key] = found
        return found


def outermost(owner: type, attr: str) -> Callable[[type], bool]:
    """Whether the patch of ``attr`` placed on ``owner`` is the outermost one for a call on an instance of a class:
    ``outermost(owner, attr)(type(instance))``, one dict lookup per call."""
    answers: dict[type, bool] = {}

    def check(cls: type) -> bool:
        answer = answers.get(cls)
        if answer is None:
            answer = answers[cls] = definer(cls, attr) is owner
        return answer

    return check
