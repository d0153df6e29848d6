"""validate, schema, status and export: commands that change nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keysync.cli import console
from keysync.cli.commands import boundary
from keysync.cli.group import make_options, shared_options

if TYPE_CHECKING:
    from keysync.cli.commands.several import Section


@click.command()
@shared_options
@click.argument("more", nargs=-1, type=click.Path(path_type=Path), metavar="[MANIFEST]...")
@boundary
def validate(more: tuple[Path, ...], **kwargs: Any) -> int:
    """Check manifests offline: -f/--manifest, or every MANIFEST given.

    \b
    Examples:
      keysync validate
      keysync validate deploy/*/keysync.yaml
    """
    from keysync.errors import ManifestError
    from keysync.manifest.load import load_manifest

    paths = more or kwargs["manifest"]
    options = make_options(kwargs, manifest=paths[0])
    problems: list[str] = []
    results: list[tuple[Path, dict[str, Any]]] = []
    for path in paths:
        try:
            loaded = load_manifest(path)
        except ManifestError as exc:
            problems += exc.problems
            results.append((path, {"valid": False, "problems": exc.problems}))
            continue
        count, sink = len(loaded.manifest.keys), loaded.manifest.sink.type
        results.append((path, {"valid": True, "keys": count, "sink": sink}))
        if options.format != "json":
            console.out(f"{path}: valid ({count} key{'s' if count != 1 else ''}, sink {sink})")
    if options.format == "json":
        console.out(json.dumps(_validate_document(results), indent=2))
    if problems:
        raise ManifestError(problems)
    return 0


def _validate_document(results: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any] | list[dict[str, Any]]:
    """One manifest: an object listing it. Several: a list, one object per manifest, as plan and
    status give them."""
    from keysync.plandoc import FORMAT_VERSION

    if len(results) == 1:
        ((path, fields),) = results
        manifests = [{"path": str(path), **fields}]
        return {"format_version": FORMAT_VERSION, "valid": fields["valid"], "manifests": manifests}
    return [{"manifest": str(path), "format_version": FORMAT_VERSION, **fields} for path, fields in results]


@click.command()
@boundary
def schema() -> int:
    """Print the manifest's JSON Schema.

    \b
    Example:
      keysync schema > schemas/keysync.schema.json
    """
    from keysync.manifest.schema import schema_text

    console.out(schema_text())
    return 0


@click.command()
@shared_options
@boundary
def status(**kwargs: Any) -> int:
    """Show live keys with age, last use, and whether the sink holds their secret.

    \b
    Example:
      keysync status --format json
    """
    from keysync.cli.commands.several import each, exit_code, write

    paths, output_format = kwargs["manifest"], kwargs["output_format"]
    if len(paths) > 1:
        sections = each(paths, lambda path: _status_section(dict(kwargs), path))
        write(sections, output_format)
        return exit_code(sections)
    section = _status_section(kwargs, paths[0])
    console.out(json.dumps(section.document, indent=2) if output_format == "json" else section.text)
    return 0


def _status_section(kwargs: dict[str, Any], path: Path) -> Section:
    from keysync.cli.commands.several import Section
    from keysync.engine.session import Session
    from keysync.status import key_rows, render_rows

    session = Session(make_options(kwargs, manifest=path))
    try:
        manifest = session.loaded.manifest
        rows = key_rows(manifest, session.client.list_keys(), session.sink.read(), datetime.now(UTC))
    finally:
        session.close()
    if session.options.format == "json":
        from keysync.plandoc import FORMAT_VERSION

        document = {"format_version": FORMAT_VERSION, "coderd_url": session.coderd_url, "keys": rows}
        return Section(path, 0, document=document)
    markdown = session.options.format == "markdown"
    return Section(path, 0, render_rows(rows, datetime.now(UTC), markdown=markdown))


@click.command()
@shared_options
@boundary
def export(**kwargs: Any) -> int:
    """Write a manifest of the live keys to stdout, to adopt an existing deployment.

    \b
    Example:
      keysync export --url https://coder.example.com > keysync.yaml
    """
    from keysync.adoption import export_document, export_yaml
    from keysync.engine.session import Session

    session = Session(make_options(kwargs))
    manifest = session.manifest_if_present()
    try:
        keys = session.client.list_keys()
        coderd = {"url": session.coderd_url, "api": session.client.api}
    finally:
        session.close()
    document = export_document(keys, coderd, manifest)
    if session.options.format == "json":
        console.out(json.dumps(document, indent=2))
    else:
        console.out(export_yaml(document))
    return 0


COMMANDS = [validate, schema, status, export]
