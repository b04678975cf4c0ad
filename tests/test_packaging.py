"""The fixed layout ships correctly: one manifest, the training submodule, data files, a light import."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("napari_fracto-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_ships_the_one_manifest_unchanged(wheel):
    assert wheel.read("napari_fracto_manifest/napari.yaml") == (ROOT / "napari.yaml").read_bytes()
    entry_points = next(n for n in wheel.namelist() if n.endswith("entry_points.txt"))
    text = wheel.read(entry_points).decode()
    assert "napari-fracto = napari_fracto_manifest:napari.yaml" in text
    assert "napari-fracto = napari_fracto.cli:main" in text


def test_wheel_ships_every_training_module_and_data_file(wheel):
    names = set(wheel.namelist())
    for source in (ROOT / "training").rglob("*.py"):
        rel = source.relative_to(ROOT / "training").as_posix()
        assert f"napari_fracto/training/{rel}" in names, f"training/{rel} is missing from the wheel"
    for source in (ROOT / "src" / "napari_fracto").rglob("*"):
        if source.is_file() and "__pycache__" not in source.parts:
            rel = source.relative_to(ROOT / "src").as_posix()
            assert rel in names, f"{rel} is missing from the wheel (add its package or data glob)"
    manifest_files = [n for n in names if n.startswith("napari_fracto_manifest/")]
    assert manifest_files == ["napari_fracto_manifest/napari.yaml"]


def test_manifest_validates_with_imports():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-fracto", "--imports"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_training_submodule_imports_under_its_package_name():
    import napari_fracto.training as training

    assert Path(training.__file__).resolve().parent == ROOT / "training"


def test_import_is_light():
    """napari imports the plugin at start-up: torch, transformers, openai and Qt must load lazily."""
    code = (
        "import sys, napari_fracto, napari_fracto.cli, napari_fracto.analysis, napari_fracto.io.readers;"
        "heavy = ('torch', 'transformers', 'openai', 'qtpy', 'PyQt6', 'peft');"
        "heavy = [m for m in heavy if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_wheel_metadata_gives_the_hub_its_links_and_a_licence_the_plugin_manager_shows(wheel):
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    lines = wheel.read(name).decode().splitlines()
    assert (
        "License: BSD-3-Clause" in lines
    )  # npe2's package_metadata.license (License-Expression is not read)
    assert "Classifier: License :: OSI Approved :: BSD License" in lines
    urls = {line.split(": ", 1)[1].split(",")[0] for line in lines if line.startswith("Project-URL: ")}
    assert {"Homepage", "Documentation", "User Support", "Source Code", "Bug Tracker"} <= urls
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel.namelist())
