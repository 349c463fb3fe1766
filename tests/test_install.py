"""`pip install` gives a working package: the wheel holds every module and the shipped model, and its
`captioner` command, installed into a fresh virtual environment outside the repository, captions a
photo offline exactly as `python predict.py` does in the repository.

Installing TensorFlow again would take minutes, so the fresh environment borrows this interpreter's
site-packages for the dependencies (a `.pth` line) and gets only the wheel (`--no-deps`).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from captioner.cli import COMMANDS
from captioner.model.saving import SHIPPED_MODEL

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "captioner"
BUILD_INPUTS = ("pyproject.toml", "README.md")  # what the build reads besides captioner/ (README: long description)
PHOTO = ROOT / "data" / "examples" / "cat.jpg"
TIMEOUT_S = 600
WHERE_ARE_PACKAGE_AND_MODEL = (  # run by the fresh environment's python: two paths, one a line
    "import captioner, importlib.resources as r; print(captioner.__file__); "
    f"print(r.files('captioner.pretrained') / {SHIPPED_MODEL.name!r})"
)

def read_pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_lines(name: str) -> list[str]:
    """The requirements of a requirements file, without comments and without its -r / -e lines."""
    lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def skip_unless_buildable() -> None:
    """Building without isolation needs the setuptools that pyproject.toml's build-system asks for."""
    if not SHIPPED_MODEL.exists():
        pytest.skip("no shipped model in captioner/pretrained/ to install")
    setuptools = pytest.importorskip("setuptools", reason="no setuptools: the wheel cannot be built")
    from packaging.requirements import Requirement

    for needed in map(Requirement, read_pyproject()["build-system"]["requires"]):
        if needed.name == "setuptools" and not needed.specifier.contains(setuptools.__version__):
            pytest.skip(f"setuptools {setuptools.__version__} cannot build this package ({needed}); "
                        "pip install -r requirements-test.txt")


def run(command, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def run_together(*commands, env) -> list[subprocess.CompletedProcess]:
    """Run (command, cwd) pairs at the same time; their results in the same order."""
    processes = [subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for command, cwd in commands]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources, so no build/ or *.egg-info lands in the repository."""
    skip_unless_buildable()
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(PACKAGE, source / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in BUILD_INPUTS:
        shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheelhouse")
    built = run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "--no-index",
                 "--quiet", "-w", str(out)], cwd=source)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel_file,) = out.glob("captioner-*.whl")
    return wheel_file


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment outside the repository with the wheel installed and nothing else."""
    venv = tmp_path_factory.mktemp("install") / "venv"
    assert ROOT not in venv.parents
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=TIMEOUT_S)
    python = venv / "bin" / "python"
    site_packages = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv)
    ours = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}  # TensorFlow, Keras, ... (not the repo)
    (Path(site_packages.stdout.strip()) / "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    installed = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                     "--quiet", str(wheel)], cwd=venv)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def offline_environment(tmp_path) -> dict:
    """An empty Keras cache (nothing to read, any download would fail), and no way back to the repository."""
    environment = {**os.environ, "KERAS_HOME": str(tmp_path / "empty_keras_home"), "CUDA_VISIBLE_DEVICES": ""}
    for name in ("PYTHONPATH", "CAPTIONER_MODEL"):
        environment.pop(name, None)
    return environment


def test_requirement_files_agree_with_pyproject():
    project = read_pyproject()["project"]
    assert requirement_lines("requirements.txt") == project["dependencies"]
    assert requirement_lines("requirements-test.txt") == project["optional-dependencies"]["test"]
    assert "-e ." in (ROOT / "requirements.txt").read_text().splitlines()  # the `captioner` command
    assert "-r requirements.txt" in (ROOT / "requirements-test.txt").read_text().splitlines()


def test_the_wheel_holds_every_module_the_shipped_model_and_the_command(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    modules = {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*.py")}
    assert modules - names == set()
    assert {"captioner/data/readers/__init__.py", "captioner/pretrained/MODEL_CARD.md",
            SHIPPED_MODEL.relative_to(ROOT).as_posix()} <= names
    assert "captioner = captioner.cli:main" in entry_points


def test_the_installed_package_is_the_wheel_not_the_repository(venv, tmp_path):
    located = run([str(venv / "bin" / "python"), "-c", WHERE_ARE_PACKAGE_AND_MODEL], cwd=tmp_path,
                  env=offline_environment(tmp_path))
    assert located.returncode == 0, located.stderr
    package_file, model = (Path(line).resolve() for line in located.stdout.splitlines())
    assert venv.resolve() in package_file.parents and venv.resolve() in model.parents
    assert model.stat().st_size == SHIPPED_MODEL.stat().st_size


def test_installed_command_lists_its_subcommands(venv, tmp_path):
    helped = run([str(venv / "bin" / "captioner"), "--help"], cwd=tmp_path, env=offline_environment(tmp_path))
    assert helped.returncode == 0, helped.stderr
    for name in COMMANDS:
        assert f"  {name} " in helped.stdout


def test_installed_command_captions_a_photo_offline_like_predict_py(venv, tmp_path):
    photo = tmp_path / PHOTO.name
    shutil.copy(PHOTO, photo)
    environment = offline_environment(tmp_path)
    installed, in_repository = run_together(  # together: each spends most of its time loading TensorFlow
        ([str(venv / "bin" / "captioner"), "caption", str(photo)], tmp_path),
        ([sys.executable, "predict.py", str(photo)], ROOT), env=environment)
    assert installed.returncode == 0, installed.stderr
    (line,) = installed.stdout.splitlines()
    path, caption = line.split(": ", 1)
    assert path == str(photo) and caption.strip()
    assert not (tmp_path / "empty_keras_home" / "models").exists()  # nothing was downloaded
    assert in_repository.returncode == 0, in_repository.stderr
    assert in_repository.stdout.splitlines() == [line]  # the same model and beam: the same caption
