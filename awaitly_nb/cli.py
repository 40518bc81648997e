"""The ``awaitly-nb`` command: inspect, prune, verify and share a step store.

The store is resolved like a notebook's (:mod:`awaitly_nb.config`): ``--dir``
or ``$AWAITLY_NB_DIR`` or ``./.awaitly``, and ``--store`` or
``$AWAITLY_NB_STORE`` for a shared Redis or fsspec store.

Exit codes: 0 success; 1 a check found problems, or a key was not found;
2 bad usage; 3 a bundle was refused as untrusted (pass ``--trust``);
4 a bundle or store is damaged.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from awaitly_nb.config import (
    DEFAULT_DIR,
    ENV_DIR,
    ENV_STORE,
    default_directory,
    open_store,
    store_options_from_env,
    store_url,
    trust_unsigned_from_env,
)
from awaitly_nb.errors import (
    AwaitlyError,
    CacheWarning,
    StateFormatError,
    StorageError,
    TrustError,
)
from awaitly_nb.formatting import format_duration, format_size, format_time, text_table
from awaitly_nb.sharing.bundle import verify_bundle
from awaitly_nb.sharing.transfer import export_steps, import_steps
from awaitly_nb.storage.base import StepStore
from awaitly_nb.storage.manifest import StepManifest
from awaitly_nb.storage.signing import load_key

__all__ = ["main"]

EXIT_PROBLEMS, EXIT_USAGE, EXIT_UNTRUSTED, EXIT_DAMAGED = 1, 2, 3, 4
F = TypeVar("F", bound=Callable[..., Any])

EPILOG = (
    "Exit codes: 0 success; 1 problems found or key not found; 2 bad usage; "
    "3 bundle not trusted (use --trust); 4 bundle or store damaged."
)


def _errors(fn: F) -> F:
    """Turn awaitly_nb errors into a message on stderr and the documented exit code."""

    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TrustError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_UNTRUSTED)
        except StateFormatError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_DAMAGED)
        except AwaitlyError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_PROBLEMS)

    return run  # type: ignore[return-value]


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    """A warning as a line of its own (the source line of a library is no use here)."""
    click.echo(f"warning: {message}", err=True)


def _store(ctx: click.Context, *, create: bool = False) -> StepStore:
    """The store of ``--store`` or ``--dir``; only ``import`` may create a local one."""
    store = ctx.obj.get("store")
    if store is None:
        directory, url = Path(ctx.obj["dir"]), ctx.obj["url"]
        if url is None and not create and not (directory / "index").is_dir():
            click.echo(f"error: no awaitly_nb store at {directory} (see --dir)", err=True)
            sys.exit(EXIT_PROBLEMS)
        try:
            store = ctx.obj["store"] = open_store(
                directory,
                url,
                key=load_key(),
                trust_unsigned=trust_unsigned_from_env(),
                storage_options=store_options_from_env(),
            )
        except (StorageError, TrustError, ValueError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
    return store  # type: ignore[no-any-return]


def _find(store: StepStore, key: str, workflow: str | None) -> tuple[str, StepManifest]:
    """The (workflow, manifest) of ``key``; asks for --workflow when several have it."""
    found = [(m.workflow, m) for m in store.manifests(workflow) if m.key == key]
    if not found:
        where = f" in workflow {workflow!r}" if workflow else ""
        raise AwaitlyError(f"no saved step {key!r}{where}")
    if len(found) > 1:
        names = ", ".join(repr(wf) for wf, _ in found)
        click.echo(
            f"error: {key!r} is saved in several workflows ({names}); pass --workflow", err=True
        )
        sys.exit(EXIT_USAGE)
    return found[0]


@click.group(epilog=EPILOG)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: default_directory(),
    show_default=f"${ENV_DIR} or {DEFAULT_DIR}",
    help="The step store (for a shared store: its local blob cache).",
)
@click.option(
    "--store",
    "url",
    default=lambda: store_url(),
    show_default=f"${ENV_STORE}",
    help="A shared store instead: redis://host:6379/0, s3://bucket/path, file:///path, ...",
)
@click.version_option(package_name="awaitly-nb")
@click.pass_context
def main(ctx: click.Context, directory: Path, url: str | None) -> None:
    """Inspect, prune, verify and share awaitly_nb step stores."""
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", CacheWarning)  # said each time, never raised
    ctx.ensure_object(dict)
    ctx.obj["dir"] = directory
    ctx.obj["url"] = url or None


@main.command("ls", epilog=EPILOG)
@click.option("--workflow", help="Only this workflow (default: all).")
@click.pass_context
@_errors
def ls_command(ctx: click.Context, workflow: str | None) -> None:
    """List the saved steps: workflow, key, saved at, original duration, size, variables."""
    manifests = _store(ctx).manifests(workflow)
    if not manifests:
        click.echo("no saved steps")
        return
    rows = [("workflow", "key", "kind", "saved at", "took", "size", "variables")]
    for m in manifests:
        rows.append(
            (
                m.workflow,
                m.key,
                m.kind,
                format_time(m.saved_at, seconds=True),
                format_duration(m.duration_ms),
                format_size(m.size),
                ", ".join(m.variables),
            )
        )
    click.echo(text_table(rows))


@main.command("show", epilog=EPILOG)
@click.argument("key")
@click.option("--workflow", help="The workflow, if several have this key.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
@_errors
def show_command(ctx: click.Context, key: str, workflow: str | None, as_json: bool) -> None:
    """Show one step's manifest, variables and sizes."""
    wf, manifest = _find(_store(ctx), key, workflow)
    if as_json:
        click.echo(json.dumps(manifest.to_dict(), indent=2, sort_keys=True, default=str))
        return
    click.echo(f"key:       {key}")
    click.echo(f"workflow:  {wf}")
    click.echo(f"kind:      {manifest.kind}")
    click.echo(f"saved at:  {format_time(manifest.saved_at, seconds=True)}")
    click.echo(f"took:      {format_duration(manifest.duration_ms)}")
    click.echo(f"size:      {format_size(manifest.size)} on disk")
    versions = manifest.versions
    click.echo("written by: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    types, sizes = manifest.types, manifest.nbytes
    variables = manifest.variables
    click.echo(f"variables: {len(variables)}")
    for name in variables:
        click.echo(f"  {name:<24} {types.get(name, ''):<20} {format_size(sizes.get(name))}")


@main.command("forget", epilog=EPILOG)
@click.argument("key")
@click.option("--workflow", help="The workflow, if several have this key.")
@click.pass_context
@_errors
def forget_command(ctx: click.Context, key: str, workflow: str | None) -> None:
    """Forget one step: it runs again next time. (`gc` then frees its blobs.)"""
    store = _store(ctx)
    wf, _ = _find(store, key, workflow)
    store.delete(wf, key)
    click.echo(f"forgot {key!r} of workflow {wf!r}")


@main.command("clear", epilog=EPILOG)
@click.option("--workflow", help="Only this workflow (default: all).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@_errors
def clear_command(ctx: click.Context, workflow: str | None, yes: bool) -> None:
    """Forget every step (of one workflow, or all), then remove their blobs."""
    store = _store(ctx)
    what = f"workflow {workflow!r}" if workflow else "every workflow"
    if not yes:
        click.confirm(f"forget every step of {what} in {store.directory}?", abort=True)
    count = store.clear(workflow)
    report = store.gc(min_age=0)
    click.echo(f"forgot {count} step(s) of {what}; freed {format_size(report.bytes)}")


@main.command("gc", epilog=EPILOG)
@click.option(
    "--min-age",
    type=float,
    default=600.0,
    show_default=True,
    help="Keep files younger than this many seconds (a save may be in progress).",
)
@click.pass_context
@_errors
def gc_command(ctx: click.Context, min_age: float) -> None:
    """Remove blob files no saved step refers to, and leftovers of interrupted writes."""
    report = _store(ctx).gc(min_age=min_age)
    click.echo(
        f"removed {report.blobs} blob(s), {format_size(report.bytes)}; "
        f"{report.temporaries} temporary file(s)"
    )


@main.command("export", epilog=EPILOG)
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--workflow", help="Only this workflow (default: all).")
@click.option("--key", "keys", multiple=True, help="Only this key (repeatable).")
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The team key to sign with (default: $AWAITLY_NB_KEY; none: unsigned).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: big bundles).")
@click.pass_context
@_errors
def export_command(
    ctx: click.Context,
    path: Path,
    workflow: str | None,
    keys: tuple[str, ...],
    key_file: Path | None,
    progress: bool | None,
) -> None:
    """Write saved steps to one bundle file PATH for a teammate."""
    report = export_steps(
        _store(ctx),
        path,
        workflow=workflow,
        keys=set(keys) or None,
        key=load_key(key_file),
        progress=progress,
    )
    signed = "signed" if report.signed else "unsigned"
    click.echo(
        f"exported {len(report.steps)} step(s), {report.blobs} blob(s) "
        f"({format_size(report.bytes)}) to {path} ({signed})"
    )


@main.command("import", epilog=EPILOG)
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trust", is_flag=True, help="Import even if not signed with the team key.")
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The team key (default: $AWAITLY_NB_KEY).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: big bundles).")
@click.pass_context
@_errors
def import_command(
    ctx: click.Context, path: Path, trust: bool, key_file: Path | None, progress: bool | None
) -> None:
    """Import a bundle PATH into the store; every checksum is verified first.

    Restoring an imported step unpickles it, which runs code: a bundle must be
    signed with the team key, or you must pass --trust.
    """
    directory, url = Path(ctx.obj["dir"]), ctx.obj["url"]
    new = url is None and not directory.exists()
    store = _store(ctx, create=True)
    try:
        report = import_steps(store, path, trust=trust, key=load_key(key_file), progress=progress)
    except BaseException:
        if new:  # a refused import leaves no empty store behind
            store.close()
            shutil.rmtree(directory, ignore_errors=True)
        raise
    signed = "signed with the team key" if report.signed else "trusted without a signature"
    click.echo(
        f"imported {len(report.steps)} step(s), {report.blobs} blob(s) "
        f"({format_size(report.bytes)}) from {path} ({signed})"
    )


@main.command("verify", epilog=EPILOG)
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The team key to check a bundle's signature (default: $AWAITLY_NB_KEY).",
)
@click.pass_context
@_errors
def verify_command(ctx: click.Context, path: Path | None, key_file: Path | None) -> None:
    """Check a bundle PATH, or (without PATH) every step and blob of the store."""
    if path is not None:
        key = load_key(key_file)
        check = verify_bundle(path, key=key)
        problems, what = check.problems, str(path)
        if not problems and key is not None and not check.signed:
            click.echo(f"problem: {check.signature}")
            click.echo(f"{what}: not signed with the team key")
            sys.exit(EXIT_UNTRUSTED)
        if not problems:
            click.echo(
                "signed with the team key"
                if check.signed
                else "signature not checked: no team key ($AWAITLY_NB_KEY or --key-file)"
            )
    else:
        store = _store(ctx)
        problems = store.verify()
        what = ctx.obj["url"] or str(ctx.obj["dir"])
    if problems:
        for problem in problems:
            click.echo(f"problem: {problem}")
        click.echo(f"{what}: {len(problems)} problem(s)")
        sys.exit(EXIT_PROBLEMS)
    click.echo(f"{what}: ok")


if __name__ == "__main__":  # pragma: no cover
    main()
