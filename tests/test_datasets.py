"""Where the shared datasets and the emulated boards' firmware are found: a given folder, else
the environment, else the source checkout's ../shared; from an installed wheel (no source
checkout) an error that says what to give or set.

Runs on: host (pytest). tests/test_wheel.py runs the same from a real installed wheel.
"""

import importlib.util
import shutil

import pytest

import microprop
from microprop.firmware_tools import cli, emulated
from microprop.host import datasets as host_datasets
from microprop.host import pipeline
from microprop.host.errors import UserError

from .helpers import ROOT


@pytest.fixture
def no_checkout(monkeypatch):
    """As from an installed wheel: no source checkout beside the package, no environment."""
    monkeypatch.setattr(host_datasets, "shared_folder", lambda: None)
    monkeypatch.delenv(host_datasets.DATASETS_ENV, raising=False)


@pytest.fixture
def basic_motions_copy(datasets, tmp_path):
    """A folder of our own holding basic_motions.csv (and not the shoulder file)."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(datasets / "basic_motions.csv", folder / "basic_motions.csv")
    return folder


def test_an_installed_package_has_no_source_checkout(tmp_path):
    # microprop/__init__.py in a folder with no pyproject.toml beside it, as in site-packages
    package = tmp_path / "site-packages" / "microprop"
    package.mkdir(parents=True)
    shutil.copy(ROOT / "microprop" / "__init__.py", package / "__init__.py")
    (tmp_path / "shared" / "datasets").mkdir(parents=True)  # even with a shared/ above it
    spec = importlib.util.spec_from_file_location("installed_microprop", package / "__init__.py")
    installed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(installed)
    assert installed.shared_folder() is None
    assert microprop.shared_folder() == ROOT.parent / "shared"  # this checkout's


def test_the_folder_given_comes_before_the_environment(basic_motions_copy, monkeypatch, tmp_path):
    monkeypatch.setenv(host_datasets.DATASETS_ENV, str(tmp_path / "elsewhere"))
    assert host_datasets.find_datasets(basic_motions_copy)[0] == basic_motions_copy
    log = pipeline.load_log("basic_motions", datasets_dir=basic_motions_copy)
    assert log.path == str(basic_motions_copy / "basic_motions.csv")
    assert len(set(log.labels.tolist())) == 4


def test_the_environment_comes_before_the_checkout(basic_motions_copy, monkeypatch):
    monkeypatch.setenv(host_datasets.DATASETS_ENV, str(basic_motions_copy))
    assert host_datasets.find_datasets() == (
        basic_motions_copy,
        "MICROPROP_DATASETS=%s" % basic_motions_copy,
    )
    assert host_datasets.load("basic_motions").path == str(
        basic_motions_copy / "basic_motions.csv"
    )


def test_the_checkout_folder_is_the_last_resort(datasets, monkeypatch):
    monkeypatch.delenv("MICROPROP_DATASETS", raising=False)
    folder, source = host_datasets.find_datasets()
    assert folder.samefile(datasets) and source == "the source checkout's ../shared/datasets"


def test_without_a_folder_the_error_says_what_to_give(no_checkout):
    assert host_datasets.find_datasets() == (None, None)
    for name in ("shoulder", "basic_motions"):
        with pytest.raises(UserError) as e:
            pipeline.load_log(name)
        assert str(e.value) == (
            "datasets: %r needs the shared datasets: give --datasets DIR or set "
            "MICROPROP_DATASETS" % name
        )
        assert "shoulder_exercises.csv.gz and basic_motions.csv" in e.value.hint


def test_a_folder_without_the_file_is_named(basic_motions_copy, no_checkout):
    with pytest.raises(UserError, match=r"datasets: no shoulder_exercises.csv.gz in .*data "
                       r"\(from --datasets .*data\): give --datasets DIR or set "
                       r"MICROPROP_DATASETS"):  # fmt: skip
        host_datasets.load("shoulder", basic_motions_copy)


def test_an_unknown_dataset_is_refused():
    with pytest.raises(UserError, match="unknown dataset 'walk', expected one of shoulder"):
        host_datasets.load("walk")


def test_train_takes_datasets_dir(basic_motions_copy, no_checkout, tmp_path, capsys):
    out = tmp_path / "m.npz"
    argv = ["train", "--data", "basic_motions", "--epochs", "2", "--quiet", "--out", str(out)]
    assert cli.main(argv + ["--datasets", str(basic_motions_copy)]) == 0
    assert out.exists()
    capsys.readouterr()
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "microprop: datasets: 'basic_motions' needs the shared datasets: give --datasets DIR "
        "or set MICROPROP_DATASETS"
    ), err


def test_without_a_checkout_the_firmware_error_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.setattr(emulated, "DEFAULT_FIRMWARE", None)
    monkeypatch.delenv("MICROPROP_FIRMWARE", raising=False)
    with pytest.raises(
        UserError,
        match=r"^emulated board: no cortex-m0 firmware: give --firmware FILE_OR_FOLDER or set "
        r"MICROPROP_FIRMWARE to the folder holding microbit-cortex-m0.elf, ",
    ):
        emulated.find_firmware("cortex-m0")
    monkeypatch.setenv("MICROPROP_FIRMWARE", str(tmp_path))
    with pytest.raises(UserError, match=r"\(from MICROPROP_FIRMWARE=%s\)" % tmp_path):
        emulated.find_firmware("cortex-m0")
