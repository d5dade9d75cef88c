"""tools/reference.py: the variable reference written from the roles' argument specs, and the check `make lint`
runs (defaults and specs agree, docs/reference.md is what the generator writes).

Each failure is shown on a small role in a temporary checkout, then the real checkout passes.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# tools/ is not a package: load the script as a module.
_spec = importlib.util.spec_from_file_location("reference", REPO / "tools/reference.py")
assert _spec and _spec.loader
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

SPECS = """\
---
argument_specs:
  main:
    short_description: a demo role
    description:
      - What it is for.
    options:
      demo_port:
        description:
          - Port it listens on.
        type: int
        default: 8000
      demo_mode:
        description: How it runs, per `<slug>`.
        type: str
        default: fast
        choices: [fast, slow]
      demo_items:
        description: Things.
        type: list
        elements: dict
        default:
          - {name: a, size: 1}
        options:
          name:
            type: str
            required: true
            description: The name | with a bar.
"""

DEFAULTS = """\
---
demo_port: 8000
demo_mode: fast
demo_items:
  - {name: a, size: 1}
"""


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    """A checkout with one role whose defaults, specs and reference agree."""
    role = tmp_path / "roles/demo"
    (role / "meta").mkdir(parents=True)
    (role / "defaults").mkdir()
    (role / "meta/argument_specs.yml").write_text(SPECS)
    (role / "defaults/main.yml").write_text(DEFAULTS)
    (tmp_path / "docs").mkdir()
    assert reference.main(["--root", str(tmp_path)]) == 0
    return tmp_path


DEFAULTS_FILE = "roles/demo/defaults/main.yml"
SPECS_FILE = "roles/demo/meta/argument_specs.yml"


def problems_after(checkout: Path, file: str, old: str, new: str, regenerate: bool = False) -> list[str]:
    """What the check says once `old` in one file of the checkout reads `new` (and, with regenerate, once the
    reference was written again, so only the rule under test can fail)."""
    path = checkout / file
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    if regenerate:
        reference.main(["--root", str(checkout)])
    return reference.check(checkout)


def test_agreeing_checkout_passes(checkout: Path) -> None:
    assert reference.check(checkout) == []


def test_default_missing_from_the_specs_fails(checkout: Path) -> None:
    assert problems_after(checkout, DEFAULTS_FILE, "demo_port: 8000\n", "demo_port: 8000\ndemo_extra: 1\n") == [
        "roles/demo: demo_extra is in defaults/main.yml but not in meta/argument_specs.yml"]


def test_spec_default_missing_from_the_defaults_fails(checkout: Path) -> None:
    assert problems_after(checkout, DEFAULTS_FILE, "demo_mode: fast\n", "") == [
        "roles/demo: demo_mode has a default in meta/argument_specs.yml but is not in defaults/main.yml"]


def test_differing_default_fails(checkout: Path) -> None:
    assert problems_after(checkout, DEFAULTS_FILE, "demo_port: 8000", "demo_port: 8001") == [
        "roles/demo: demo_port defaults to `8001` in defaults/main.yml but to `8000` in meta/argument_specs.yml"]


def test_a_string_is_not_the_number_it_spells(checkout: Path) -> None:
    assert len(problems_after(checkout, DEFAULTS_FILE, "demo_port: 8000", 'demo_port: "8000"')) == 1


def test_differing_nested_default_fails(checkout: Path) -> None:
    assert problems_after(checkout, DEFAULTS_FILE, "size: 1", "size: 2") == [
        "roles/demo: demo_items defaults to `[{name: a, size: 2}]` in defaults/main.yml but to "
        "`[{name: a, size: 1}]` in meta/argument_specs.yml"]


def test_default_without_a_spec_default_fails(checkout: Path) -> None:
    assert problems_after(checkout, SPECS_FILE, "        default: 8000\n", "", regenerate=True) == [
        "roles/demo: demo_port has no default in meta/argument_specs.yml; defaults/main.yml says `8000`"]


def test_jinja_in_a_description_fails(checkout: Path) -> None:
    assert problems_after(checkout, SPECS_FILE, "Port it listens on.", "Port, e.g. {{ vault_port }}.",
                          regenerate=True) == [
        "roles/demo: the description of demo_port holds Jinja, which Ansible would evaluate"]


def test_stale_reference_fails(checkout: Path) -> None:
    assert problems_after(checkout, SPECS_FILE, "Port it listens on.", "Port it listens on, on every address.") == [
        "docs/reference.md is not what tools/reference.py writes: run python3 tools/reference.py"]
    reference.main(["--root", str(checkout)])
    assert reference.check(checkout) == []


def test_hand_edited_or_missing_reference_fails(checkout: Path) -> None:
    page = checkout / "docs/reference.md"
    page.write_text(page.read_text() + "A note by hand.\n")
    assert len(reference.check(checkout)) == 1
    page.unlink()
    assert len(reference.check(checkout)) == 1


def test_page_shows_type_default_choices_and_description(checkout: Path) -> None:
    page = (checkout / "docs/reference.md").read_text()
    assert textwrap.dedent("""\
        ### demo_mode

        - type: `str`
        - default: `fast`
        - choices: `fast`, `slow`

        How it runs, per `<slug>`.
        """) in page
    assert "- type: `int`\n- default: `8000`\n\nPort it listens on.\n" in page
    assert "  ```yaml\n  - {name: a, size: 1}\n  ```" in page
    assert "| `name` | `str` | yes |  | The name \\| with a bar. |" in page


def test_angle_brackets_outside_code_are_escaped() -> None:
    assert reference.markdown("a <slug> and `<slug>`") == "a &lt;slug> and `<slug>`"


def test_output_is_stable(checkout: Path) -> None:
    assert reference.render(checkout) == reference.render(checkout)
    assert (checkout / "docs/reference.md").read_text() == reference.render(checkout)


def test_command_line_check_exit_codes(checkout: Path) -> None:
    command = [sys.executable, str(REPO / "tools/reference.py"), "--check", "--root", str(checkout)]
    assert subprocess.run(command, capture_output=True, text=True).returncode == 0
    (checkout / "docs/reference.md").write_text("stale\n")
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode == 1
    assert "docs/reference.md is not what tools/reference.py writes" in failed.stderr


def test_this_checkout_agrees() -> None:
    assert reference.check(REPO) == []
