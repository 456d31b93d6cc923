"""The environment contract (htd_pipelines.settings): every HTD_* variable the package names is
declared in VARIABLES, read only through settings, documented, and its accessors fall back to
the embedded defaults. Reads source files and the environment only: no Dagster, no database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from htd_pipelines import settings

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "htd_pipelines"
SETTINGS_FILE = PACKAGE / "settings.py"

NAME = re.compile(r"\bHTD_[A-Z_]+\b")
# os.environ.get("HTD_X") / os.environ["HTD_X"] / os.getenv("HTD_X") / environ.pop('HTD_X') /
# "HTD_X" in os.environ (with or without the os. prefix, any quotes)
DIRECT_READ = re.compile(
    r"""(?:\b(?:os\.)?(?:environ(?:\s*\.\s*(?:get|pop|setdefault))?|getenv)\s*[(\[]\s*"""
    r"""[rbuRBU]?["']HTD_[A-Z_]*["'])"""
    r"""|(?:["']HTD_[A-Z_]*["']\s+(?:not\s+)?in\s+(?:os\.)?environ\b)"""
)


def package_sources() -> list[Path]:
    files = sorted(p for p in PACKAGE.rglob("*.py") if p != SETTINGS_FILE)
    assert len(files) > 10, f"no package sources found under {PACKAGE}"
    return files


def names_in_sources() -> dict[str, list[str]]:
    """HTD_* name -> the files (relative) that mention it, settings.py aside."""
    found: dict[str, list[str]] = {}
    for path in package_sources():
        for name in set(NAME.findall(path.read_text(encoding="utf-8"))):
            found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_htd_name_in_the_package_is_declared_in_variables() -> None:
    found = names_in_sources()
    # the scan sees the names modules are known to use (else it checks nothing)
    assert {"HTD_ENCRYPTION_KEYS", "HTD_ENCRYPTION_KEY_ID"} <= set(found)
    undeclared = {name: files for name, files in found.items() if name not in settings.VARIABLES}
    assert not undeclared, f"HTD_* names not in settings.VARIABLES: {undeclared}"


def test_variables_are_keyed_by_their_own_name() -> None:
    assert settings.VARIABLES
    for name, variable in settings.VARIABLES.items():
        assert variable.name == name
        assert NAME.fullmatch(name), name
        assert variable.doc.strip(), f"{name} has no description"


@pytest.mark.parametrize(
    ("line", "direct"),
    [
        ('url = os.environ.get("HTD_DATABASE_URL")', True),
        ("url = os.environ['HTD_DATABASE_URL']", True),
        ('x = os.getenv("HTD_FAST_PATH", "1")', True),
        ('x = environ.get( "HTD_FAST_PATH")', True),
        ('os.environ.pop("HTD_UI_URL", None)', True),
        ('if "HTD_HOME" in os.environ:', True),
        ("url = settings.database_url()", False),
        ("url = os.environ.get(config.target_env)", False),
        ('"""Reads HTD_DATABASE_URL through settings."""', False),
        ('os.environ["DAGSTER_HOME"] = home', False),
    ],
)
def test_direct_read_pattern(line: str, direct: bool) -> None:
    assert bool(DIRECT_READ.search(line)) is direct


def test_no_module_but_settings_reads_an_htd_variable_itself() -> None:
    offenders = []
    for path in package_sources():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if DIRECT_READ.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, "read HTD_* through htd_pipelines.settings:\n" + "\n".join(offenders)


# -- accessors ------------------------------------------------------------------------------------


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in settings.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "htd-home"
    monkeypatch.setenv("HTD_HOME", str(home))
    return home.resolve()


@pytest.mark.parametrize("unset", [None, "", "   "], ids=["unset", "empty", "blank"])
def test_defaults_under_htd_home_when_unset_or_blank(
    monkeypatch: pytest.MonkeyPatch, home: Path, unset: str | None
) -> None:
    for name in ("HTD_DATABASE_URL", "HTD_SNAPSHOT_URI", "HTD_RELATIONS_FILE"):
        if unset is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, unset)
    assert settings.htd_home() == home
    assert settings.database_url() == f"sqlite:///{home / 'demo.sqlite'}"
    assert settings.snapshot_uri() == str(home / "snapshots")
    # the registry's default is the demo registry shipped in the package
    assert settings.relations_file() == str(settings.DEMO_RELATIONS_FILE)
    assert Path(settings.relations_file()).is_file()


def test_htd_home_defaults_to_dot_htd_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, home: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("HTD_HOME", "  ")
    monkeypatch.chdir(tmp_path)
    assert settings.htd_home() == (tmp_path / ".htd").resolve()
    assert settings.database_url() == f"sqlite:///{(tmp_path / '.htd').resolve() / 'demo.sqlite'}"
    assert settings.snapshot_uri() == str((tmp_path / ".htd").resolve() / "snapshots")


def test_set_values_win_and_are_stripped(
    monkeypatch: pytest.MonkeyPatch, home: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("HTD_DATABASE_URL", "  postgresql+psycopg://u@db/app \n")
    monkeypatch.setenv("HTD_SNAPSHOT_URI", "s3://bucket/snaps")
    monkeypatch.setenv("HTD_RELATIONS_FILE", str(tmp_path / "rel.yaml"))
    assert settings.database_url() == "postgresql+psycopg://u@db/app"
    assert settings.snapshot_uri() == "s3://bucket/snaps"
    assert settings.relations_file() == str(tmp_path / "rel.yaml")


def test_values_are_read_at_call_time_not_at_import(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("HTD_SNAPSHOT_URI", "/first")
    assert settings.snapshot_uri() == "/first"
    monkeypatch.setenv("HTD_SNAPSHOT_URI", "/second")
    assert settings.snapshot_uri() == "/second"


@pytest.mark.parametrize("value", ["0", "false", "no", "FALSE", "No", " 0 "])
def test_fast_path_off(monkeypatch: pytest.MonkeyPatch, home: Path, value: str) -> None:
    monkeypatch.setenv("HTD_FAST_PATH", value)
    assert settings.fast_path_enabled() is False


@pytest.mark.parametrize("value", [None, "", "1", "true", "yes"])
def test_fast_path_on(monkeypatch: pytest.MonkeyPatch, home: Path, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("HTD_FAST_PATH", raising=False)
    else:
        monkeypatch.setenv("HTD_FAST_PATH", value)
    assert settings.fast_path_enabled() is True


def test_numeric_accessors_use_their_defaults_and_overrides(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    assert settings.marker_batch_size() == int(settings.MARKER_BATCH_SIZE.default)
    assert settings.marker_max_attempts() == int(settings.MARKER_MAX_ATTEMPTS.default)
    monkeypatch.setenv("HTD_MARKER_BATCH_SIZE", " 7 ")
    monkeypatch.setenv("HTD_MARKER_RETRY_MINUTES", "2.5")
    assert settings.marker_batch_size() == 7
    assert settings.marker_retry_minutes() == 2.5
    assert settings.change_column() is None
    monkeypatch.setenv("HTD_CHANGE_COLUMN", "updated_at")
    assert settings.change_column() == "updated_at"


def test_ui_url_has_no_trailing_slash(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("HTD_UI_URL", "https://dagster.example.org/")
    assert settings.ui_url() == "https://dagster.example.org"


# -- documentation --------------------------------------------------------------------------------


@pytest.mark.skipif(
    not (ROOT / "docs").exists(),
    reason="docs/ is being written: the contract is checked once it exists",
)
def test_every_variable_is_documented() -> None:
    texts = [(ROOT / "README.md").read_text(encoding="utf-8")]
    texts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").rglob("*.md"))]
    documented = set(NAME.findall("\n".join(texts)))
    missing = sorted(set(settings.VARIABLES) - documented)
    assert not missing, f"HTD_* variables documented nowhere in README.md or docs/: {missing}"
