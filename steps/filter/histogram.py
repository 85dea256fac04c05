"""filter.by_label's pass-rate histogram as a small SVG, written without a plotting library.

Importing matplotlib and drawing one bar chart took 0.5-0.8 s, a third of filtering 5M rows;
this is a few hundred bytes of text, the same on every machine, and `recipe report` embeds it.
"""
from __future__ import annotations

from html import escape
from pathlib import Path

W, H = 600, 330
LEFT, RIGHT, TOP, BOTTOM = 84, 16, 48, 48  # margins around the plot area (title and legend on top)


def nice_ticks(top: int, count: int = 5) -> list[int]:
    """Round tick values from 0 to at least `top` (1, 2 or 5 times a power of ten apart)."""
    raw = max(top, 1) / count
    step = 1
    while step * 10 <= raw:
        step *= 10
    for m in (1, 2, 5, 10):
        if step * m >= raw:
            step *= m
            break
    return list(range(0, top + step, step)) if top else [0, 1]


def histogram_svg(path: Path, counts: list[int], unparseable: int, bounds: list[float], column: str,
                  title: str) -> None:
    """Bars for `counts` (equal bins over [0, 1]), a red bar for the unparseable rows right of 1,
    dashed lines at `bounds`."""
    bins = len(counts)
    ticks = nice_ticks(max([*counts, unparseable, 0]))
    x0, y0, pw, ph = LEFT, H - BOTTOM, W - LEFT - RIGHT, H - TOP - BOTTOM
    xs = pw / (1 + 2 / bins)  # pixels per unit of pass rate; room for the unparseable bar past 1

    def y(v: float) -> float:
        return y0 - ph * v / ticks[-1]

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="13">{escape(title)}</text>']
    for t in ticks:
        out.append(f'<line x1="{x0}" y1="{y(t):.1f}" x2="{x0 + pw}" y2="{y(t):.1f}" stroke="#ddd"/>'
                   f'<text x="{x0 - 4}" y="{y(t) + 4:.1f}" text-anchor="end">{t:,}</text>')
    for i, c in enumerate(counts):
        out.append(_bar(x0 + xs * i / bins, xs / bins, y(c), y0, "#4477aa", f"{i / bins:g}-{(i + 1) / bins:g}: {c:,}"))
    out.append(_bar(x0 + xs * (1 + 1 / bins), xs / bins, y(unparseable), y0, "#bb5566",
                    f"unparseable: {unparseable:,}"))
    for b in bounds:
        out.append(f'<line x1="{x0 + xs * b:.1f}" y1="{TOP}" x2="{x0 + xs * b:.1f}" y2="{y0}" stroke="black" '
                   'stroke-dasharray="4 3"/>')
    for v in (0, 0.25, 0.5, 0.75, 1):
        out.append(f'<text x="{x0 + xs * v:.1f}" y="{y0 + 14}" text-anchor="middle">{v:g}</text>')
    out += [f'<line x1="{x0}" y1="{y0}" x2="{x0 + pw}" y2="{y0}" stroke="black"/>',
            f'<text x="{x0 + pw / 2}" y="{H - 10}" text-anchor="middle">{escape(column)}</text>',
            f'<text x="14" y="{TOP + ph / 2}" text-anchor="middle" '
            f'transform="rotate(-90 14 {TOP + ph / 2})">rows</text>',
            f'<rect x="{x0}" y="{TOP - 18}" width="10" height="10" fill="#4477aa"/>'
            f'<text x="{x0 + 14}" y="{TOP - 9}">parseable</text>',
            f'<rect x="{x0 + 90}" y="{TOP - 18}" width="10" height="10" fill="#bb5566"/>'
            f'<text x="{x0 + 104}" y="{TOP - 9}">unparseable ({unparseable:,})</text>',
            "</svg>"]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def _bar(x: float, width: float, top: float, bottom: float, colour: str, tip: str) -> str:
    return (f'<rect x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" height="{bottom - top:.1f}" fill="{colour}">'
            f'<title>{escape(tip)}</title></rect>')
