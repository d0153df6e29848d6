"""The command line: parses options, composes the pieces, maps failures to exit codes."""

from __future__ import annotations

import functools
import logging
import math
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from keysync import __version__
from keysync.cli import console

if TYPE_CHECKING:
    from keysync.engine.session import Options

F = TypeVar("F", bound=Callable[..., Any])
EXIT_INTERRUPTED = 130
MAX_TIMEOUT = 86400.0  # a day: larger timeouts overflow the clocks they are added to


def shared_options(func: F) -> F:
    """The options every command takes, gathered into a keysync.engine.session.Options."""
    options = [
        click.option(
            "-f",
            "--manifest",
            type=click.Path(path_type=Path),
            multiple=True,
            default=[Path("keysync.yaml")],
            show_default=True,
            help="The manifest file (validate, plan and status take several).",
        ),
        click.option("--url", envvar="CODER_URL", help="Coder's URL (env CODER_URL)."),
        click.option(
            "--token-file",
            type=click.Path(path_type=Path),
            help="File holding the session token (default: env CODER_SESSION_TOKEN, or coderd.token_env).",
        ),
        click.option(
            "--api",
            type=click.Choice(["auto", "coderd-keys", "aibridge-keys", "ai-gateway-keys"]),
            help="API generation (default: the manifest's, else auto).",
        ),
        click.option(
            "--ca-cert",
            type=click.Path(path_type=Path, exists=True, dir_okay=False),
            help="CA bundle to verify Coder's TLS certificate.",
        ),
        click.option(
            "--timeout",
            type=Seconds(),
            default=30.0,
            show_default=True,
            help="How long each request may take: seconds, or a duration such as 2m.",
        ),
        click.option(
            "--format",
            "output_format",
            type=click.Choice(["text", "json", "markdown"]),
            default="text",
            show_default=True,
            help="Output format.",
        ),
        click.option("--no-color", is_flag=True, help="No colour (also env NO_COLOR)."),
        click.option("-v", "--verbose", is_flag=True, help="More detail on stderr."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), func)


class Seconds(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.3
    """A number of seconds (`30`, `2.5`) or a duration (`90s`, `2m`), from 0.1s to a day."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        seconds = float(value) if isinstance(value, int | float) else self._parse(str(value), param, ctx)
        if math.isnan(seconds):  # NaN passes every range comparison
            self.fail("nan is not a number of seconds", param, ctx)
        if not 0.1 <= seconds <= MAX_TIMEOUT:
            self.fail(f"{value!s:.40} is not between 0.1s and {MAX_TIMEOUT:g}s (a day)", param, ctx)
        return seconds

    def _parse(self, text: str, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return float(text)
        except ValueError:
            pass
        from keysync.duration import parse_duration

        try:
            return parse_duration(text).total_seconds()
        except ValueError:
            self.fail(f"{text[:40]!r} is neither a number of seconds nor a duration such as 2m", param, ctx)


def make_options(kwargs: dict[str, Any], manifest: Path | None = None, **extra: Any) -> Options:
    """The shared options click parsed, less those `kwargs` held; `manifest`: which one of
    several (validate, plan and status take each in turn)."""
    from keysync.engine.session import Options

    manifests = kwargs.pop("manifest")
    extra["manifest"] = manifest or only_manifest(manifests)
    names = ("url", "token_file", "api", "ca_cert", "timeout", "no_color", "verbose")
    fields = {name: kwargs.pop(name) for name in names}
    if fields["verbose"]:
        logging.getLogger("keysync").setLevel(logging.INFO)
    context = click.get_current_context(silent=True)
    from_env = context is not None and context.get_parameter_source("url") == ParameterSource.ENVIRONMENT
    extra.setdefault("url_source", "CODER_URL" if from_env else "--url")
    return Options(format=kwargs.pop("output_format"), **fields, **extra)


def only_manifest(manifests: Sequence[Path], what: str = "") -> Path:
    """The one manifest of a command (or option) that takes exactly one."""
    from keysync.errors import UsageError

    if len(manifests) > 1:
        context = click.get_current_context(silent=True)
        what = what or (context.info_name if context else None) or "this command"
        raise UsageError(f"{what} takes exactly one manifest, not {len(manifests)} (-f given several times)")
    return manifests[0]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="keysync")
def cli() -> None:
    """keysync keeps Coder's AI Gateway keys equal to a YAML manifest in git.

    \b
    Example:
      export CODER_URL=https://coder.example.com CODER_SESSION_TOKEN=...
      keysync plan && keysync apply
    """


def _register() -> None:
    from keysync.cli.commands import register

    register(cli)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _log_to_stderr() -> None:
    """Waits and retries, one line each on stderr; -v shows the short ones too."""
    logger = logging.getLogger("keysync")
    if not logger.handlers:
        handler = console.ConsoleHandler()
        handler.setFormatter(logging.Formatter("keysync: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM stops keysync like Ctrl-C (exit 130); apply and watch install finer handlers.
    signal.signal(signal.SIGTERM, _interrupt)
    _log_to_stderr()
    _register()
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None, prog_name="keysync", standalone_mode=False
        )
    except click.exceptions.Abort:
        console.err("keysync: interrupted")
        return EXIT_INTERRUPTED
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        console.err(f"keysync: error: {console.printable(exc.format_message())}")
        return 1
    except KeyboardInterrupt:
        console.err("keysync: interrupted")
        return EXIT_INTERRUPTED
    return _honest(int(result or 0))


def _honest(code: int) -> int:
    """A command whose output was lost (its reader went away) did not succeed, whatever it did."""
    lost = console.lost()
    if not lost or code not in (0, 2):
        return code
    console.err(f"keysync: error: could not write to {' and '.join(lost)}: its reader went away")
    return 1
