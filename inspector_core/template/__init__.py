"""The plugin template: ``inspector plugin new NAME`` makes a ready plugin distribution.

The template (``copier/``, rendered with copier) is the one recommended layout, the one the
built-in plugins use: ``pyproject.toml`` with the entry point and the host dependency,
``src/PACKAGE/`` with a detector and its typed config, ``tests/`` using the kit
(:mod:`inspector_core.testing`) that pass before the plugin is installed, and a README with the
figures table to fill. copier comes with the host's ``kit`` extra (``pip install "inspector[kit]"``);
a generated plugin keeps the answers it was made with in ``.copier-answers.yml``.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import click

TEMPLATE = Path(__file__).resolve().parent / "copier"
"""The copier template's folder (``copier.yml`` and ``project/``)."""

NAME = re.compile(r"^[a-z][a-z0-9_]{0,59}$")


class TemplateError(ValueError):
    """A plugin cannot be made as asked; the message says why and what to do."""


def _check_name(name: str) -> None:
    if not NAME.match(name) or name.endswith("_") or "__" in name:
        raise TemplateError(
            f"plugin name {name!r}: use lowercase letters, digits and single underscores, starting with a letter "
            "(at most 60 characters), e.g. glare or weld_seam: it is the detector's name in station files"
        )
    if keyword.iskeyword(name):
        raise TemplateError(f"plugin name {name!r} is a Python keyword; choose another")


def new_plugin(
    name: str,
    destination: Path | None = None,
    *,
    distribution: str | None = None,
    package: str | None = None,
    description: str | None = None,
) -> Path:
    """Render the template for a detector called ``name`` into ``destination`` (default
    ``./inspector-NAME``, with ``_`` as ``-``) and return that folder.

    Raises :class:`TemplateError` for a bad name, a package that is not a Python identifier, or
    a destination that exists and is not empty (nothing is overwritten), and ``ImportError``
    naming the extra when copier is not installed."""
    _check_name(name)
    data: dict[str, str] = {"name": name}
    if distribution:
        data["distribution"] = distribution
    if package:
        if not package.isidentifier() or keyword.iskeyword(package):
            raise TemplateError(f"--package {package!r}: must be a Python identifier (e.g. inspector_{name})")
        data["package"] = package
    if description:
        data["description"] = description
    from inspector_core import __version__

    data["host_version"] = ".".join(__version__.split(".")[:2])
    dest = destination or Path(f"inspector-{name.replace('_', '-')}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise TemplateError(f"{dest}: already exists and is not an empty folder; choose another with --to")
    try:
        import copier
    except ImportError as exc:
        raise ImportError(
            'inspector plugin new needs copier: pip install "inspector[kit]" (the kit extra: copier and pytest)'
        ) from exc
    copier.run_copy(str(TEMPLATE), str(dest), data=data, defaults=True, quiet=True, overwrite=False)
    return dest


@click.group()
def plugin() -> None:
    """Make a plugin from the template: inspector plugin new NAME."""


@plugin.command("new")
@click.argument("name")
@click.option(
    "--to",
    "destination",
    type=click.Path(file_okay=False, path_type=Path),
    help="folder to create (default ./inspector-NAME)",
)
@click.option("--distribution", help="distribution name on PyPI (default inspector-NAME)")
@click.option("--package", help="Python package under src/ (default inspector_NAME)")
@click.option("--description", help="one line for the distribution's metadata")
def new(
    name: str, destination: Path | None, distribution: str | None, package: str | None, description: str | None
) -> None:
    """Make a ready detector plugin NAME: a distribution in the recommended layout (src/,
    pyproject with the entry point and the host dependency, a detector with a typed config,
    tests using the kit that pass before installing, a README with the figures table to fill)."""
    try:
        dest = new_plugin(name, destination, distribution=distribution, package=package, description=description)
    except (TemplateError, ImportError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created {dest}/: detector {name!r}")
    from inspector_core.plugins import load

    owner = load().plugin_of("detector", name)
    if owner is not None:
        click.echo(
            f"note: the installed plugin {owner.name!r} ({owner.distribution or 'no distribution'}) already registers "
            f"a detector {name!r}; once both are installed neither is loaded under that name: rename one",
            err=True,
        )
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        click.echo(f"  {path.relative_to(dest)}")
    click.echo(
        "next:\n"
        f"  cd {dest}\n"
        "  python -m pytest        # its tests, with Inspector's kit, before installing\n"
        "  pip install -e .        # then `inspector plugins` lists it"
    )
