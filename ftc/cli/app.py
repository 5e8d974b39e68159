"""The `ftc` command line. Each command imports what it needs when it runs, so startup stays fast."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ftc import __version__
from ftc.errors import FtcError

if TYPE_CHECKING:
    from ftc.backends.base import Submitted

app = typer.Typer(
    name="ftc",
    help="The finetune compiler: one spec for every finetune parameter, compiled for local, SLURM, Ray and Azure ML.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a parameter: --set training.learning_rate=1e-4 (or by leaf name: --set learning_rate=1e-4). Repeatable.",
        metavar="KEY=VALUE",
    ),
]
SpecArgument = Annotated[Path, typer.Argument(help="The spec file (YAML).", show_default=False)]


def _warn(problem: object) -> None:
    typer.echo(f"warning: {problem}", err=True)


def _fail(error: FtcError) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(error.exit_code)


@contextlib.contextmanager
def _signals_end_the_command() -> Iterator[None]:
    """SIGTERM, SIGINT and SIGHUP end the command with exit code 128 + the signal, its cleanup done.

    The local target's submit installs its own handlers meanwhile, which pass them on to the run.
    """

    def end(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, end) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ftc {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """The finetune compiler."""


@app.command()
def compile(
    spec: SpecArgument,
    target: Annotated[
        list[str],
        typer.Option("--target", "-t", help="Target to compile for (repeatable), or 'all'. See `ftc targets`."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Build folder; each target writes <output>/<target>/.")] = Path(
        "build"
    ),
    set_: SetOption = None,
) -> None:
    """Validate SPEC and write each target's artifacts (launcher, ftc.resolved.json, manifest.json).

    Nothing is written unless every target compiles; an earlier build is replaced whole, but files put
    in a target folder by hand (job logs) are kept, and named. One compile at a time writes a folder.
    """
    from ftc.compiler.build import compile_spec

    try:
        written = compile_spec(spec, target, output, set_ or [], on_warning=_warn)
    except FtcError as exc:
        raise _fail(exc) from None
    for folder in written:
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        typer.echo(f"{folder}/: {', '.join(files)}")


@app.command()
def run(
    spec: SpecArgument,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the trained model, metrics.json and logs.")],
    set_: SetOption = None,
) -> None:
    """Compile SPEC for the local target into a temporary folder and run it here, streaming its output.

    SIGTERM, SIGINT and SIGHUP are passed on to the run, which stops; ftc then removes the temporary
    folder and exits with 128 + the signal.
    """
    import tempfile

    from ftc.backends.registry import get_backend
    from ftc.compiler.build import compile_spec

    with _signals_end_the_command(), tempfile.TemporaryDirectory(prefix="ftc-run-") as build:
        try:
            (folder,) = compile_spec(spec, ["local"], build, set_ or [], on_warning=_warn)
        except FtcError as exc:
            raise _fail(exc) from None
        output.mkdir(parents=True, exist_ok=True)
        try:
            result = get_backend("local").submit(folder, ["--output_dir", str(output.resolve())])
        except FtcError as exc:
            raise _fail(exc) from None
    raise typer.Exit(result.exit_code)


@app.command()
def lint(
    specs: Annotated[list[Path], typer.Argument(help="Spec files to check.", show_default=False)],
    format: Annotated[
        str, typer.Option("--format", "-f", help="text, json, github (workflow annotations) or sarif (code scanning).")
    ] = "text",
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")] = False,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", "-t", help="Also run these targets' checks (repeatable, or 'all')."),
    ] = None,
    set_: SetOption = None,
) -> None:
    """Check specs: schema errors, cross-field rules and, with --target, the targets' own checks.

    Exit 0 when clean (warnings allowed unless --strict), 1 with findings, 2 when a file cannot be read.
    """
    from ftc.cli.lint_report import REPORTERS, lint_files

    if format not in REPORTERS:
        typer.echo(f"error: --format must be one of {', '.join(REPORTERS)}", err=True)
        raise typer.Exit(2)
    try:
        results = lint_files(specs, set_ or [], target or [])
    except FtcError as exc:
        raise _fail(exc) from None
    typer.echo(REPORTERS[format](results), nl=False)
    unreadable = any(f.rule == "FTC000" for r in results for f in r.findings)
    failing = any(f.severity == "error" or strict for r in results for f in r.findings)
    raise typer.Exit(2 if unreadable else 1 if failing else 0)


@app.command()
def explain(spec: SpecArgument, set_: SetOption = None) -> None:
    """Print every resolved parameter, its value and where the value came from."""
    from ftc.cli.explain import explain_lines
    from ftc.compiler.build import load_resolved

    try:
        resolved = load_resolved(spec, set_ or [])
    except FtcError as exc:
        raise _fail(exc) from None
    for line in explain_lines(resolved):
        typer.echo(line)


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="The other tool's config file.", show_default=False)],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="The tool the file is for: anyscale (LLMForge YAML), llama-recipes, axolotl or azureml. "
            "Left out: the file's own keys say which.",
        ),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the spec here instead of to stdout.")] = None,
) -> None:
    """Convert another tool's finetune config into an ftc spec that trains as that tool would.

    Every value is written on its own line with where it came from as a comment (`# learning_rate`,
    `# LLMForge default ...`); settings with no ftc equivalent are listed in a comment block at the end and
    as warnings. The spec is checked (schema and lint rules) before it is written; nothing is written when
    it fails. Exit 0 when written, 1 when the result fails lint, 2 when the file cannot be imported (a
    value the tool itself refuses names the setting and the values it accepts).
    """
    from ftc.cli.importing import checked_spec_text
    from ftc.importers import find_importer

    try:
        imported = find_importer(path, source).convert(path)
        text = checked_spec_text(imported, output, on_warning=_warn)
    except FtcError as exc:
        raise _fail(exc) from None
    for warning in imported.warnings:
        _warn(warning)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(output)
    except OSError as exc:
        typer.echo(f"error: {output}: cannot be written: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{output}: imported from {path} ({imported.tool})", err=True)


@app.command()
def docs(
    task: Annotated[str | None, typer.Option("--task", help="Tables for one task, in the Azure ML component layout.")] = None,
    rules: Annotated[bool, typer.Option("--rules", help="The lint rules: id, severity and what each checks.")] = False,
    target: Annotated[str | None, typer.Option("--target", help="The page of one target, with a worked example.")] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="The page of one tool `ftc import` reads: its names and defaults.")
    ] = None,
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            help="With --task: 'tables' (the parameter tables), or a target that documents what it makes of the "
            "task ('azureml': the command component, in the layout of the Azure ML component docs).",
        ),
    ] = "tables",
) -> None:
    """Print the parameter documentation, generated from the schema (the reference, one task's tables, or the rules)."""
    import ftc.backends.registry  # noqa: F401  (registers the targets: their options and rules are documented too)
    from ftc.spec import docs as spec_docs
    from ftc.spec.fields import TASKS

    if rules:
        typer.echo(spec_docs.render_rules(), nl=False)
        return
    if source is not None:
        _source_docs(source)
        return
    if target is not None:
        from ftc.compiler.target_docs import render_target_docs

        try:
            typer.echo(render_target_docs(target), nl=False)
        except KeyError as exc:
            typer.echo(f"error: {exc.args[0]}", err=True)
            raise typer.Exit(2) from None
        return
    if task is None:
        if format_ != "tables":
            typer.echo("error: --format documents one task: give --task too", err=True)
            raise typer.Exit(2)
        typer.echo(spec_docs.render_reference(), nl=False)
        return
    if task not in TASKS:
        typer.echo(f"error: unknown task {task!r}; tasks: {', '.join(TASKS)}", err=True)
        raise typer.Exit(2)
    if format_ == "tables":
        typer.echo(spec_docs.render_task_docs(task), nl=False)
        return
    from ftc.backends.registry import backends
    from ftc.compiler.build import task_docs

    documented = {name: page for name in backends() if (page := task_docs(task, name)) is not None}
    if format_ not in documented:
        typer.echo(f"error: unknown docs format {format_!r}; formats: {', '.join(['tables', *documented])}", err=True)
        raise typer.Exit(2)
    typer.echo(documented[format_], nl=False)


def _source_docs(source: str) -> None:
    """Print the page of one tool `ftc import` reads (the targets are registered: the schema has their sections)."""
    from ftc.importers.docs import render_source_docs

    try:
        typer.echo(render_source_docs(source), nl=False)
    except KeyError as exc:
        typer.echo(f"error: {exc.args[0]}", err=True)
        raise typer.Exit(2) from None


@app.command()
def schema() -> None:
    """Print the spec's JSON Schema (for editors: yaml-language-server, and other tools)."""
    import ftc.backends.registry  # noqa: F401  (registers the targets: the schema has their sections)
    from ftc.spec.schema import schema_text

    typer.echo(schema_text(), nl=False)


@app.command()
def targets() -> None:
    """List the registered targets."""
    from ftc.backends.registry import backends

    for name, backend in backends().items():
        typer.echo(f"{name:10} {backend.summary}")


@app.command()
def submit(
    spec: SpecArgument,
    target: Annotated[str, typer.Option("--target", "-t", help="The target to submit to.")],
    address: Annotated[
        str | None, typer.Option("--address", help="Scheduler or cluster address, for targets that take one.")
    ] = None,
    set_: SetOption = None,
    runtime_args: Annotated[
        list[str] | None, typer.Argument(help="After --: arguments for the runtime (--<parameter> VALUE).")
    ] = None,
) -> None:
    """Compile SPEC for TARGET into a temporary folder and hand it to the target (run it, for local)."""
    import tempfile

    from ftc.backends.registry import get_backend
    from ftc.compiler.build import compile_spec

    with _signals_end_the_command(), tempfile.TemporaryDirectory(prefix="ftc-submit-") as build:
        try:
            (folder,) = compile_spec(spec, [target], build, set_ or [], on_warning=_warn)
            result = get_backend(target).submit(
                folder, runtime_args or [], address=address, on_output=_output, on_status=_status
            )
        except FtcError as exc:
            raise _fail(exc) from None
        _report(result)
    raise typer.Exit(result.exit_code)


def _output(text: str) -> None:
    """A submitted job's output, as it comes, on stdout, as it is (colours kept)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def _status(text: str) -> None:
    """A line on a submit's progress, on stderr."""
    typer.echo(f"ftc: {text}", err=True)


def _report(result: Submitted) -> None:
    """How a submit ended: a followed job's final state (stderr), else where the job went (stdout)."""
    if result.job_id is None:  # it ran here: its own output was the report
        return
    if result.state is not None:
        detail = f": {result.message}" if result.message else ""
        typer.echo(f"ftc: {result.job_kind} {result.job_id} {result.state}{detail}", err=True)
    elif result.parsable:
        typer.echo(result.job_id)
    else:
        typer.echo(f"submitted {result.job_id} to {result.where}")
        if result.url:
            typer.echo(result.url)


def main() -> None:
    app()
