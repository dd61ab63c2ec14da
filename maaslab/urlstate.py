"""Settings in the URL: read a frozen config dataclass from query parameters and write it back.

A teacher shares a link and the page reopens with the same settings. A link can carry anything,
so every value is parsed with the type of the field's default, checked by the dataclass itself,
and a nonsense value is replaced by its default with a warning that says what was ignored. The
dataclass's checks are the ranges its page's widgets offer, so an accepted value is one the page
can show. A warning quotes the link's text cut short (`quoted`); it is still the link's text, so
a page shows it as plain text, never as Markdown.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from maaslab.errors import MaaslabError

C = TypeVar("C")
MAX_VALUE_CHARS = 100  # longer than any setting's text; a longer value is refused unread
QUOTE_CHARS = 40  # how much of a refused value a warning repeats


def clipped(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` cut to `limit` characters (an ellipsis marks the cut): a link can carry pages."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quoted(raw: str) -> str:
    """How a warning quotes a value from a link: clipped, in quotes."""
    return repr(clipped(raw))


def _parse(raw: str, default: Any) -> Any:
    # The type of the default decides how the text is read; bool before int (bool is an int).
    text = raw.strip()
    if isinstance(default, bool):
        if text.lower() in {"1", "true", "yes", "on"}:
            return True
        if text.lower() in {"0", "false", "no", "off"}:
            return False
        raise ValueError("expected true or false")
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            value = float(text)
        elif isinstance(default, tuple):
            return tuple(int(part) for part in text.split(",") if part.strip())
        else:
            return text
    except ValueError:
        kind = "a whole number" if isinstance(default, int) else "a number"
        raise ValueError(f"expected {kind}") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def slider_options(
    options: Sequence[Any], current: Any, label: Callable[[Any], str] = str
) -> list[Any]:
    """A select slider's stops plus `current`, so a value a link set between two stops is kept.

    A stop that the slider would label like `current` (0.01 next to 0.0100000001 under "{:g}")
    gives way to it: two stops with one label cannot be told apart, by a person or by Streamlit.
    """
    shown = label(current)
    return sorted({current, *(o for o in options if label(o) != shown)})


def config_from_params(cls: type[C], params: Mapping[str, Any]) -> tuple[C, list[str]]:
    """Build `cls` from URL query parameters; return it and one warning per ignored value.

    Parameters
    ----------
    cls : a frozen dataclass whose fields all have defaults and whose __post_init__ raises
        MaaslabError for invalid values.
    params : the query parameters, e.g. `st.query_params` (a value may be a list: last one wins).
        Keys that are not fields of `cls` are left alone (other parts of the page may use them).
    """
    defaults = cls()
    values: dict[str, Any] = {}
    warnings: list[str] = []
    # Fields are taken in declaration order and each is checked together with those accepted
    # before it, so a field that depends on an earlier one (a CNN needs the digits dataset) is
    # judged against the link's own earlier values.
    for field in dataclasses.fields(cls):
        if field.name not in params:
            continue
        raw = params[field.name]
        raw = str(raw[-1] if isinstance(raw, list | tuple) and raw else raw)
        default = getattr(defaults, field.name)
        try:
            if len(raw) > MAX_VALUE_CHARS:
                raise ValueError(f"longer than {MAX_VALUE_CHARS} characters")
            value = _parse(raw, default)
            cls(**values, **{field.name: value})
        except (ValueError, MaaslabError) as err:
            warnings.append(
                f"ignored {field.name}={quoted(raw)} from the URL ({err}); using {_format(default)}"
            )
            continue
        values[field.name] = value
    return cls(**values), warnings


def config_to_params(config: Any) -> dict[str, str]:
    """The query parameters that reopen `config` (every field, so a shared link is explicit)."""
    return {f.name: _format(getattr(config, f.name)) for f in dataclasses.fields(config)}
