"""What every command shares: the DSN, the client, and errors as one line without a traceback."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Iterator
from typing import Any

import click

import pggcl
from pggcl.core.options import env_session_dsn
from pggcl.errors import LimitExistsError, LimitNotFoundError, PggclError


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_dsn(ctx: click.Context) -> str:
    """The DSN given to the top-level command, or a clear error."""
    dsn = ctx.find_root().obj
    if not dsn:
        raise click.ClickException("no database given: pass --dsn or set PGGCL_DSN")
    return str(dsn)


@contextlib.contextmanager
def open_client(ctx: click.Context) -> Iterator[pggcl.Client]:
    """A sync client on the command's DSN (its session connection on PGGCL_SESSION_DSN when
    that is set: the DSN is a transaction pooler's), closed when the command is done."""
    dsn = require_dsn(ctx)
    with pggcl.Client(dsn, session_dsn=env_session_dsn()) as client:
        yield client


@contextlib.contextmanager
def about_limit(name: str) -> Iterator[None]:
    """Name the limit in the error when it does not exist, or exists already."""
    try:
        yield
    except LimitNotFoundError:
        raise click.ClickException(f"global concurrency limit {name!r} not found") from None
    except LimitExistsError:
        raise click.ClickException(f"global concurrency limit {name!r} already exists") from None


INT4_MAX = 2**31 - 1


def check_slots(option: str, value: int | None) -> None:
    """Slot counts are PostgreSQL integers: name the option when one is too large (the engine
    itself refuses negative values, naming the limit)."""
    if value is not None and value > INT4_MAX:
        raise click.ClickException(f"invalid {option}: {value}; at most {INT4_MAX} slots")


class ClientLog(logging.Handler):
    """What the client logs (a limit created inactive, a lease reclaimed, a lost session), one
    line each on stderr. Held back until the command has got through (`show`), and dropped when
    it fails: then its one error line says what went wrong, without the client's retries."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.live = False

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "Error" if record.levelno >= logging.ERROR else "Warning"
        line = f"{prefix}: {(record.getMessage().strip().splitlines() or [''])[0]}"
        if self.live:
            click.echo(line, err=True)  # through click at each record, for click's test runner
        else:
            self.lines.append(line)

    def show(self) -> None:
        """Print what was held back, and from now on each record as it comes."""
        self.live = True
        for line in self.lines:
            click.echo(line, err=True)
        self.lines.clear()

    @classmethod
    def of(cls, ctx: click.Context) -> ClientLog:
        log: ClientLog = ctx.find_root().meta.setdefault("pggcl.client_log", cls())
        return log


def one_line(exc: BaseException) -> str:
    """The first line of what went wrong.

    A PggclError says it for people already, by its type: a database without the schema
    (SchemaNotInstalledError) reads "pggcl is not installed in this database (run `pggcl db
    upgrade`): ...", a role without the grant (PermissionDeniedError) says which role it
    needs. Nothing here reads an error's text to find out what it is."""
    if isinstance(exc, PggclError):
        inner: BaseException = exc
    else:
        # SQLAlchemy (`pggcl db`) wraps the driver's error and appends a background link:
        # show the driver's.
        inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip() or type(inner).__name__
    return text.splitlines()[0]


class CliGroup(click.Group):
    """A group that turns any unexpected exception into `Error: <one line>`, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        if ctx.parent is not None:  # only the outermost group translates
            return super().invoke(ctx)
        log = ClientLog.of(ctx)
        logger = logging.getLogger("pggcl")
        logger.addHandler(log)
        try:
            result = super().invoke(ctx)
        except click.exceptions.Exit:
            log.show()
            raise
        except (click.ClickException, click.Abort):
            raise
        except Exception as exc:
            raise click.ClickException(one_line(exc)) from exc
        finally:
            logger.removeHandler(log)
        log.show()
        return result
