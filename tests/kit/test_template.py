"""`inspector plugin new NAME`: the generated distribution is in the recommended layout and its
own tests pass out of the box, before it is installed (they import it from src/ and register it
in the kit's host)."""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from click.testing import CliRunner

from inspector_core.cli import main
from inspector_core.plugins import load

TREE = [
    ".copier-answers.yml",
    ".gitignore",
    "README.md",
    "pyproject.toml",
    "src/inspector_weld_seam/__init__.py",
    "src/inspector_weld_seam/detector.py",
    "src/inspector_weld_seam/py.typed",
    "tests/test_weld_seam.py",
]


def test_plugin_new_makes_a_distribution_whose_tests_pass_before_it_is_installed(tmp_path):
    dest = tmp_path / "inspector-weld-seam"
    out = CliRunner().invoke(main, ["plugin", "new", "weld_seam", "--to", str(dest)])
    assert out.exit_code == 0, out.output
    assert f"created {dest}/: detector 'weld_seam'" in out.output and "python -m pytest" in out.output
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == TREE

    project = tomllib.loads((dest / "pyproject.toml").read_text())["project"]
    assert project["name"] == "inspector-weld-seam"
    assert project["entry-points"]["inspector.plugins"] == {"weld_seam": "inspector_weld_seam"}
    assert any(d.startswith("inspector>=") for d in project["dependencies"])
    assert project["optional-dependencies"]["test"] == ["inspector[kit]>=0.1"]
    readme = (dest / "README.md").read_text()
    assert "| figure | value | measured how" in readme and "_to measure_" in readme
    assert "class WeldSeam(Detector):" in (dest / "src/inspector_weld_seam/detector.py").read_text()

    # Its own test suite, as its author runs it: pytest in its folder (the kit is a pytest plugin).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:randomly"],
        cwd=dest,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout, run.stdout
    # Not installed: the host's installed plugins do not know it.
    assert "weld_seam" not in load().detectors

    # Its wheel holds the package from src/ and the entry point; the host loads it through that
    # entry point, as after `pip install` (the wheel unpacked on sys.path, not into the venv).
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(dest), "-w"]
    subprocess.run([*build, str(wheels)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("inspector_weld_seam-0.1.0-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "inspector_weld_seam" / "py.typed").is_file()
    (dist,) = md.distributions(path=[str(site)])
    sys.path.insert(0, str(site))
    try:
        reg = load(entry_points=dist.entry_points)
    finally:
        sys.path.remove(str(site))
    info = reg.plugins["weld_seam"]
    assert (info.distribution, info.version, info.detectors, info.error) == (
        "inspector-weld-seam",
        "0.1.0",
        ["weld_seam"],
        None,
    )


def test_plugin_new_refuses_a_bad_name_and_an_existing_folder(tmp_path):
    out = CliRunner().invoke(main, ["plugin", "new", "Weld-Seam", "--to", str(tmp_path / "x")])
    assert out.exit_code == 1 and "plugin name 'Weld-Seam': use lowercase letters, digits" in out.output
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    out = CliRunner().invoke(main, ["plugin", "new", "glare", "--to", str(tmp_path / "taken")])
    assert out.exit_code == 1 and "already exists and is not an empty folder" in out.output
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]


def test_the_template_ships_with_the_package():
    from inspector_core.template import TEMPLATE

    assert (TEMPLATE / "copier.yml").is_file()
    assert Path(TEMPLATE / "project" / "pyproject.toml.jinja").is_file()


def test_plugin_new_warns_when_an_installed_plugin_has_the_name(tmp_path):
    out = CliRunner().invoke(main, ["plugin", "new", "scratch", "--to", str(tmp_path / "s")])
    assert out.exit_code == 0, out.output
    assert "note: the installed plugin 'scratch' (inspector-scratch) already registers a detector 'scratch'" in (
        out.output
    )
