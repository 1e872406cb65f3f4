"""What a conversion did: one row per converted module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["ConversionReport", "ReportRow"]


@dataclass(frozen=True)
class ReportRow:
    path: str
    before: str
    after: str
    parameters_before: int
    parameters_after: int


@dataclass
class ConversionReport:
    """Rows of ``(module path, type before, type after, parameters before, parameters after)``,
    plus which hyperparameter drives which dropout module and decays which parameters."""

    rows: list[ReportRow] = field(default_factory=list)
    dropout: dict[str, list[str]] = field(default_factory=dict)
    weight_decay: dict[str, list[str]] = field(default_factory=dict)

    def __iter__(self) -> Iterator[ReportRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        header = ("module", "before", "after", "params before", "params after")
        cells = [header] + [
            (r.path or "(root)", r.before, r.after, f"{r.parameters_before:,}", f"{r.parameters_after:,}")
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        lines = [
            "  ".join(
                c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in cells
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        before = sum(r.parameters_before for r in self.rows)
        after = sum(r.parameters_after for r in self.rows)
        lines.append(f"{len(self.rows)} modules converted; parameters {before:,} -> {after:,}")
        for name, paths in self.dropout.items():
            lines.append(f"{name} drives dropout: {', '.join(paths)}")
        for name, params in self.weight_decay.items():
            lines.append(f"{name} decays: {', '.join(params)}")
        return "\n".join(lines)
