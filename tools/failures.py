"""Print the failed tests of a JUnit XML report, last, where a CI log's tail shows them.

A failing molecule scenario prints pytest's report first and then its whole destroy step, so a log cut to its tail
says only "Verifier tests failed". The Makefile runs this after a failed scenario: each failed test's name and the
end of its message.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

MESSAGE_LINES = 12  # of each failure's traceback: its end holds the assertion and the test's own words


def failures(report: Path) -> list[str]:
    lines: list[str] = []
    for case in ET.parse(report).getroot().iter("testcase"):
        for problem in [*case.findall("failure"), *case.findall("error")]:
            lines.append(f"FAILED {case.get('classname')}::{case.get('name')} ({problem.tag})")
            text = (problem.text or problem.get("message") or "").rstrip().splitlines()
            lines.extend(f"    {line[:300]}" for line in text[-MESSAGE_LINES:])
    return lines


def main() -> int:
    for name in sys.argv[1:]:
        report = Path(name)
        if report.exists():
            print("\n".join(failures(report)) or f"{report}: no failed test")
        else:
            print(f"{report}: no report (the scenario failed before its tests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
