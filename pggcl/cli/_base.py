"""What every command shares: the DSN, and errors as one line without a traceback."""

from __future__ import annotations

from typing import Any

import click


def require_dsn(ctx: click.Context) -> str:
    """The DSN given to the top-level command, or a clear error."""
    dsn = ctx.find_root().obj
    if not dsn:
        raise click.ClickException("no database given: pass --dsn or set PGGCL_DSN")
    return str(dsn)


def one_line(exc: BaseException) -> str:
    # SQLAlchemy wraps the driver's error and appends a background link: show the driver's.
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip() or type(inner).__name__
    return text.splitlines()[0]


class CliGroup(click.Group):
    """A group that turns any unexpected exception into `Error: <one line>`, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.parent is not None:  # only the outermost group translates
                raise
            raise click.ClickException(one_line(exc)) from exc
