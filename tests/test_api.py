"""The public surface: what `dispatcher` exports, what it imports, what the README documents."""

from __future__ import annotations

import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import dispatcher
from dispatcher.settings import (
    Destination,
    LinkedInSettings,
    PinterestSettings,
    Route,
    Settings,
    VNativeSettings,
    YandexSettings,
)

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in dir(dispatcher) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(dispatcher, n)).__name__ == "module"}
    assert set(dispatcher.__all__) == public - modules - {
        "annotations",
        "Iterable",
        "Literal",
        "overload",
    }


def test_producers_import_no_worker_code() -> None:
    # Given a fresh interpreter, when application code imports the producer package
    code = (
        "import sys, dispatcher; print(sorted(m for m in sys.modules if m.startswith('workers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Then nothing of the worker side was imported
    assert out.stdout.strip() == "[]"


def test_the_readme_documents_every_setting() -> None:
    tables = (Settings, LinkedInSettings, PinterestSettings, YandexSettings, VNativeSettings,
              Destination, Route)  # fmt: skip
    missing = [
        f"{table.__name__}.{name}"
        for table in tables
        for name in table.model_fields
        if f"`{name}`" not in README
    ]
    assert missing == []


def test_the_producer_api_is_marked_typed() -> None:
    # PEP 561: an application's mypy reads the dispatcher's annotations from the installed
    # package only when it ships this marker (the wheel takes every file of the package).
    assert files("dispatcher").joinpath("py.typed").is_file()
