"""What the CLI prints: JSON, plain tables, one-line errors (passwords hidden)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from htd_pipelines import settings


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)


def print_json(doc: object) -> None:
    print(json.dumps(doc, default=_json_default, ensure_ascii=False, indent=2))


def table(rows: list[dict], columns: Sequence[str]) -> str:
    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")


def one_line(text: str) -> str:
    """A message on one line, any password of a URL in it hidden."""
    return _URL_PASSWORD.sub(r"\1***@", " ".join(text.split()))


def database_error(exc: SQLAlchemyError) -> str:
    """One line for a database error: the driver's own message (without SQLAlchemy's SQL echo
    and help link) and the configured database, passwords hidden."""
    from sqlalchemy.engine import make_url

    orig = getattr(exc, "orig", None)  # the driver's exception (DBAPIError)
    reason = str(orig) if orig is not None else str(exc).split("\n(Background on this error")[0]
    reason = one_line(reason)
    try:
        configured = make_url(settings.database_url())
    except SQLAlchemyError:  # the URL itself is what is wrong; never print it (a password?)
        where = "not a valid SQLAlchemy URL"
    else:
        if configured.password and len(configured.password) >= 4:
            reason = reason.replace(configured.password, "***")
        where = configured.render_as_string(hide_password=True)
    kind = type(orig or exc).__name__
    return f"database error ({kind}): {reason} [{settings.DATABASE_URL_ENV}: {where}]"


def error(message: str) -> int:
    """Print `error: message` on stderr; the exit status 1."""
    print(f"error: {message}", file=sys.stderr)
    return 1
