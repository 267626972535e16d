"""The catalogue's constraint language: value constraints on config fields (:class:`Num`,
:class:`OneOf`, scikit-learn's ``_parameter_constraints`` style) and engine support rules
(:data:`Rule`: a parameter value -> None or the reason the engine does not implement it).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["SEED_POLICY", "Num", "OneOf", "Rule", "falsy", "int_seed", "only", "truthy", "unset"]

# -- value constraints (scikit-learn's ``_parameter_constraints`` style) -----------------------


@dataclass(frozen=True)
class Num:
    """A finite number of ``kind`` (int or float) in a range; ``None`` allowed if ``none``."""

    kind: type = float
    ge: float | None = None
    gt: float | None = None
    ne: float | None = None
    none: bool = False
    why: str = ""
    finite: bool = True  # False: +-inf allowed (never NaN)

    def describe(self) -> str:
        parts = [
            "an integer"
            if self.kind is int
            else "a finite number"
            if self.finite
            else "a number (not NaN)"
        ]
        if self.ge is not None:
            parts.append(f">= {self.ge:g}")
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.ne is not None:
            parts.append(f"other than {self.ne:g}")
        return " ".join(parts) + (" (or unset)" if self.none else "")

    def ok(self, v) -> bool:
        if v is None:
            return self.none
        if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
            return False
        if self.finite and not math.isfinite(v):
            return False
        if self.kind is int and not isinstance(v, int):
            return False
        return not (
            (self.ge is not None and v < self.ge)
            or (self.gt is not None and v <= self.gt)
            or (self.ne is not None and v == self.ne)
        )


@dataclass(frozen=True)
class OneOf:
    """One of ``options`` (each item of a list, for list fields)."""

    options: tuple
    why: str = ""

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def ok(self, v) -> bool:
        if isinstance(v, list):
            return len(v) > 0 and all(x in self.options for x in v)
        return v in self.options


#: The seed policy, stated once. A pipeline config seed is an integer >= 0 (numpy's
#: RandomState). A step called directly takes what scanpy takes; the engine runs an integer
#: seed (bitwise reproducible) and leaves ``None`` and ``Generator``/``RandomState`` objects
#: to scanpy (recorded as a fallback, :func:`int_seed`'s reason): every engine step with a
#: ``random_state`` declares ``supports={"random_state": int_seed}``, also those whose result
#: does not depend on it (neighbors' exact kNN, tsne), so one rule holds for all.
SEED_POLICY = "an integer seed (None and Generator/RandomState objects run on scanpy)"


# -- engine parameter support (checked by the dispatcher before the engine runs) ----------------
# Each rule maps a parameter value to None (supported) or the reason it is not; the reason is
# the fallback message, exactly as the engine used to raise it.
Rule = Callable[[Any], "str | None"]


def only(*allowed, why: str | Callable[[Any], str]) -> Rule:
    """Supported when the value is one of ``allowed`` (compared with ``==``, strings and None
    only).
    """

    def rule(v):
        if (v is None or isinstance(v, str)) and v in allowed:
            return None
        return why(v) if callable(why) else why

    return rule


def unset(why: str | Callable[[Any], str]) -> Rule:
    """Supported when the value is None."""
    return lambda v: None if v is None else (why(v) if callable(why) else why)


def falsy(why: str) -> Rule:
    """Supported when the value is falsy (False, None, empty)."""
    return lambda v: why if v else None


def truthy(why: str) -> Rule:
    """Supported when the value is truthy."""
    return lambda v: None if v else why


def int_seed(v) -> str | None:
    """:data:`SEED_POLICY` for the engine: an integer seed."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return None
    if v is None:
        return "random_state=None (unseeded) is not reproducible"
    return f"random_state of type {type(v).__name__}"
