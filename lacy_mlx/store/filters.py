"""Metadata filters as parameterised SQL over ``documents.metadata`` (JSON)."""
from __future__ import annotations

from typing import Any

from lacy_mlx.errors import InputError

Filters = dict[str, Any]


def _json_path(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise InputError(f"filter keys must be non-empty strings, got {key!r}")
    if "\x00" in key:  # SQLite's JSON paths end at a NUL
        raise InputError(f"filter key {key!r} holds a NUL character, which no metadata key can match")
    _check_text(key, "filter key")
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sql_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)  # json_extract gives 1/0 for JSON true/false
    if isinstance(value, float) and value != value:
        raise InputError("a filter value is NaN, which equals nothing: give a number")
    if isinstance(value, str):
        _check_text(value, "filter value")
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise InputError(f"filter values must be str, int, float, bool, None or a list of them, got {value!r}")


def filter_clause(filters: Filters | None, alias: str = "d") -> tuple[str, list[Any]]:
    """``(sql, params)`` matching documents whose metadata has every key equal to its value.

    A list or tuple value matches any of its items; ``None`` matches a missing or null key.
    The SQL is one boolean expression over ``{alias}.metadata``; it is ``1`` when there are no filters.
    """
    if filters is not None and not isinstance(filters, dict):
        raise InputError(f"filters must be a dict of metadata key -> value, e.g. {{'lang': 'en'}}; got {type(filters).__name__}")
    if not filters:
        return "1", []
    parts, params = [], []
    for key, value in filters.items():
        expr = f"json_extract({alias}.metadata, ?)"
        if isinstance(value, (list, tuple, set, frozenset)):
            items = [_sql_value(v) for v in value]
            if not items:
                raise InputError(f"filter {key!r} has an empty list: it would match nothing")
            parts.append(f"{expr} IN ({', '.join('?' * len(items))})")
            params += [_json_path(key), *items]
        elif value is None:
            parts.append(f"{expr} IS NULL")
            params.append(_json_path(key))
        else:
            parts.append(f"{expr} = ?")
            params += [_json_path(key), _sql_value(value)]
    return " AND ".join(parts), params


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"the {what} {text!r} is not valid Unicode (a lone surrogate)") from exc
