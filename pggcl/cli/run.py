"""`pggcl run`: hold slots while a command runs, so shell scripts and cron jobs share limits.

Like `flock` for one machine, but the limit is global. Exit statuses: COMMAND's own; 128+N when
signal N ended it (as the shell reports it); 127/126 when it cannot be found/executed; 1 when
pggcl itself fails (no slots within --timeout, a bad limit, no database).

Signals: SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to pggcl are passed to COMMAND, and the slots
are released once COMMAND has exited. A Ctrl-C typed at the terminal already reaches COMMAND
directly (the terminal signals the whole foreground process group), so it is not sent twice.
While pggcl still waits for slots, such a signal stops the wait and gives up the request.
If pggcl is killed outright (SIGKILL), COMMAND is killed with it (on Linux, by the parent-death
signal), so that the slots the server then reclaims are really free.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from types import FrameType

import click

import pggcl
from pggcl.cli._base import ClientLog, check_slots, require_dsn
from pggcl.cli.status import WaitStatus
from pggcl.core.options import env_session_dsn
from pggcl.errors import AcquireConcurrencySlotTimeoutError

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Signals a terminal sends to its whole foreground process group, COMMAND included.
FROM_TERMINAL = (signal.SIGINT, signal.SIGQUIT)


class Interrupted(BaseException):
    """A signal arrived before COMMAND started. A BaseException, like KeyboardInterrupt, so
    that the client gives up the queued request however it catches errors."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminal_signals_child() -> bool:
    """Whether this process is in its terminal's foreground process group; COMMAND, in the
    same group, then gets Ctrl-C from the terminal itself."""
    try:
        fd = os.open(os.ctermid(), os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no controlling terminal: cron, a service, a CI runner
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


class SignalRelay:
    """Signal handling across the phases of a run.

    waiting: a signal raises Interrupted, which abandons the wait.
    starting: signals are kept, and passed on once COMMAND exists (no orphan, no lost signal).
    running: signals are passed to COMMAND.
    done: signals are ignored, so that nothing interrupts giving the slots back.
    """

    def __init__(self) -> None:
        self.phase = "waiting"
        self.child: subprocess.Popen[bytes] | None = None
        self.pending: list[int] = []
        self.terminal_signals_child = _terminal_signals_child()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.phase == "waiting":
            raise Interrupted(signum)
        if self.phase == "starting":
            self.pending.append(signum)
        elif self.phase == "running":
            self._forward(signum)

    def _forward(self, signum: int) -> None:
        if self.child is None or self.child.returncode is not None:
            return
        if signum in FROM_TERMINAL and self.terminal_signals_child:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.child.pid, signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[SignalRelay]:
        previous = {signum: signal.signal(signum, self._handle) for signum in FORWARDED}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def run(self, command: list[str]) -> int:
        """Start COMMAND, pass signals to it until it exits, and return its exit status."""
        self.phase = "starting"
        try:
            try:
                self.child = subprocess.Popen(command, preexec_fn=_die_with_parent())
            except FileNotFoundError:
                raise CommandFailed(127, f"command not found: {command[0]}") from None
            except OSError as exc:
                raise CommandFailed(126, f"cannot run {command[0]}: {exc.strerror}") from None
            self.phase = "running"
            for signum in self.pending:
                self._forward(signum)
            returncode = self.child.wait()  # signal handlers run during the wait
        finally:
            self.phase = "done"
        return 128 - returncode if returncode < 0 else returncode


def _die_with_parent() -> Callable[[], None] | None:
    """What COMMAND runs before it starts, so that it dies if pggcl dies: on Linux, the
    parent-death signal (PR_SET_PDEATHSIG = 1) set to SIGKILL. Loaded before the fork, so the
    child only makes one libc call. None where there is no such call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # pggcl died before the signal was armed
            os._exit(137)

    return arm


class CommandFailed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _holder(command: list[str]) -> str:
    return f"{socket.gethostname()}:{os.getpid()} {shlex.join(command)}"[:200]


class RunCommand(click.Command):
    """Options may come before or after NAME; the first word after NAME (or everything after
    `--`) starts COMMAND, so COMMAND's own options are never taken for pggcl's."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {opt: False for opt in self.get_help_option_names(ctx)}
        for param in self.params:
            if isinstance(param, click.Option):
                for opt in (*param.opts, *param.secondary_opts):
                    takes_value[opt] = not param.is_flag
        options: list[str] = []
        positional: list[str] = []
        rest = list(args)
        while rest:
            arg = rest.pop(0)
            if arg == "--":
                positional += rest
                break
            if positional and not arg.startswith("-"):  # NAME is there: COMMAND begins
                positional += [arg, *rest]
                break
            if arg.startswith("-") and arg != "-":
                options.append(arg)
                if takes_value.get(arg) and rest:
                    options.append(rest.pop(0))
            else:
                positional.append(arg)
        return super().parse_args(ctx, [*options, "--", *positional])


@click.command(cls=RunCommand)
@click.argument("names", metavar="NAME[,NAME...]")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--occupy", type=int, default=1, show_default=True, help="Slots to take.")
@click.option(
    "--timeout",
    "timeout_seconds",
    type=float,
    metavar="SECONDS",
    help="Give up (exit 1) when the slots are not granted within SECONDS; default: wait.",
)
@click.option(
    "--rate",
    is_flag=True,
    help="Take rate-limit slots (they decay away) instead of holding slots during COMMAND.",
)
@click.option("--strict", is_flag=True, help="Fail when a limit does not exist.")
@click.option(
    "--priority",
    type=float,
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="A head start in the queue, -86400 to 86400: served as if it had come that many "
    "seconds earlier (negative: later). Nobody starves: a later request passes this one only "
    "by its own head start.",
)
@click.option(
    "--verbose",
    is_flag=True,
    help="While waiting, print a status line now and then even when stderr is not a terminal "
    "(on a terminal it is shown anyway, and erased when COMMAND starts).",
)
@click.pass_context
def run(
    ctx: click.Context,
    names: str,
    command: tuple[str, ...],
    occupy: int,
    timeout_seconds: float | None,
    rate: bool,
    strict: bool,
    priority: float,
    verbose: bool,
) -> None:
    """Hold slots on each limit NAME while COMMAND runs.

    \b
        pggcl run database -- pg_dump mydb
        pggcl run database,gpu --occupy 2 --timeout 60 -- ./train.sh
        pggcl run api --rate -- curl https://example.com/

    pggcl's options come before COMMAND; `--` may mark where COMMAND begins. A missing limit
    is created inactive (it limits nothing), as in Python code, with a warning; --strict
    fails instead. Exits with COMMAND's status (128+N when signal N ended it). SIGINT,
    SIGTERM, SIGHUP and SIGQUIT are passed to COMMAND; the slots are released after it exits.

    While it waits more than a moment on a terminal, a status line on stderr says for how long,
    how full each limit is, who holds it and the place in its queue; it is erased when COMMAND
    starts. On a pipe or in cron it stays silent unless --verbose.
    """
    limit_names = list(dict.fromkeys(names.split(",")))  # exactly as given: spaces too
    if "" in limit_names:
        raise click.ClickException(f"invalid limit names {names!r}: a name is empty")
    check_slots("--occupy", occupy)
    if timeout_seconds is not None and not 0 <= timeout_seconds < float("inf"):
        raise click.ClickException(
            f"invalid --timeout: {timeout_seconds:g}; it must be a finite number of seconds, "
            "0 or more"
        )
    argv = list(command)
    relay = SignalRelay()

    status: WaitStatus | None = None

    def start() -> int:
        if status is not None:
            status.stop()
        ClientLog.of(ctx).show()  # what the client said while acquiring, then live
        return relay.run(argv)

    with relay.installed():
        try:
            with _open_client(ctx) as client, _watching(client, limit_names, verbose) as status:
                if rate:
                    client.rate_limit(
                        limit_names,
                        occupy=occupy,
                        timeout_seconds=timeout_seconds,
                        strict=strict,
                        priority=priority,
                    )
                    code = start()
                else:
                    with client.concurrency(
                        limit_names,
                        occupy=occupy,
                        timeout_seconds=timeout_seconds,
                        strict=strict,
                        holder=_holder(argv),
                        priority=priority,
                    ):
                        code = start()
        except Interrupted as stop:
            name = signal.Signals(stop.signum).name
            click.echo(f"Error: interrupted by {name} while waiting for slots", err=True)
            ctx.exit(128 + stop.signum)
        except AcquireConcurrencySlotTimeoutError as exc:
            what = "slot" if occupy == 1 else "slots"
            why = f": {exc.waiting}" if exc.waiting else ""  # who held it, how many ahead
            raise click.ClickException(
                f"timed out after {timeout_seconds or 0:g} seconds waiting for {occupy} {what} "
                f"on {', '.join(repr(n) for n in limit_names)}{why}"
            ) from None
        except CommandFailed as failed:
            click.echo(f"Error: {failed}", err=True)
            ctx.exit(failed.status)
    ctx.exit(code)


@contextlib.contextmanager
def _open_client(ctx: click.Context) -> Iterator[pggcl.Client]:
    """The command's client, its session connection on PGGCL_SESSION_DSN when that is set
    (PGGCL_DSN then being a transaction pooler's), as docs/reliability.md says the CLI does."""
    with pggcl.Client(require_dsn(ctx), session_dsn=env_session_dsn()) as client:
        yield client


@contextlib.contextmanager
def _watching(client: pggcl.Client, names: list[str], verbose: bool) -> Iterator[WaitStatus | None]:
    """The wait's status line, if one is shown; erased however the wait ends."""
    status = WaitStatus.for_run(client, names, verbose)
    if status is None:
        yield None
        return
    try:
        yield status.start()
    finally:
        status.stop()


COMMANDS = [run]
