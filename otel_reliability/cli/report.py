"""What both checklist sources share: the report model, exit codes and rendering.

One app (``--url``) and a fleet (``--prometheus``) are checked from different readings; the items, and the
advice each gives, come from ``otel_reliability.checklist`` (shared with the status page), so a person reading
any of them gets the same words for the same problem. Only the standard library.
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any

from otel_reliability.checklist import ACTION, ADMIN_TOKEN_ENV, ADVICE, ERROR, HEALTH_TOKEN_ENV, OK, SKIPPED, Item

__all__ = [
    "ACTION", "ADMIN_TOKEN_ENV", "ADVICE", "ERROR", "HEALTH_TOKEN_ENV", "OK", "SKIPPED", "Item", "Report", "render",
]  # fmt: skip
EXIT_OK, EXIT_ACTION, EXIT_UNREACHABLE = 0, 1, 2
_LABELS = {OK: "ok", ACTION: "ACTION", SKIPPED: "skipped", ERROR: "ERROR", ADVICE: "advice"}


@dataclass
class Report:
    """A checklist run: ``reachable`` False means nothing could be checked (``problem`` says why)."""

    url: str
    reachable: bool
    items: list[Item] = field(default_factory=list)
    problem: str | None = None

    @property
    def exit_code(self) -> int:
        if not self.reachable:
            return EXIT_UNREACHABLE
        return EXIT_ACTION if any(i.status in (ACTION, ERROR) for i in self.items) else EXIT_OK

    def heading(self) -> str:
        return f"otel-reliability check of {self.url}"

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "reachable": self.reachable,
            "problem": self.problem,
            "exit_code": self.exit_code,
            "needs_action": self.exit_code == EXIT_ACTION,
            "items": [asdict(i) for i in self.items],
        }


def render(report: Report) -> str:
    """The human form: one line per item, its action wrapped under it, and a closing line."""
    if not report.reachable:
        return f"otel-reliability check: {report.problem}\n"
    lines = [report.heading()]
    width = max(len(i.name) for i in report.items) if report.items else 10
    for item in report.items:
        lines.append(f"  [{_LABELS[item.status]:^7}] {item.name:<{width}}  {item.summary}")
        if item.action:
            indent = " " * (14 + width)
            lines.extend(textwrap.wrap(f"-> {item.action}", _columns(), initial_indent=indent,
                                       subsequent_indent=indent + "   ", break_on_hyphens=False))  # fmt: skip
    acting = [i.name for i in report.items if i.status in (ACTION, ERROR)]
    skipped = [i.name for i in report.items if i.status == SKIPPED]
    advised = [i.name for i in report.items if i.status == ADVICE]
    if acting:
        lines.append(f"{len(acting)} item(s) need action: {', '.join(acting)}.")
    else:
        lines.append("Nothing needs action.")
    if advised:
        lines.append(f"Recommended: {', '.join(advised)} (see the advice above).")
    if skipped:
        lines.append(f"Not checked: {', '.join(skipped)} (see the notes above).")
    return "\n".join(lines) + "\n"


def _columns() -> int:
    return max(80, min(shutil.get_terminal_size((110, 24)).columns, 140))
