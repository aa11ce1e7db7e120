"""Presenting records: a terminal table, JSON, Markdown, and a plot of speedups and memory ratios."""
from __future__ import annotations

import json
import os
import sys

from sslfast._atomic import atomic_write_text
from sslfast.bench.environment import environment, machine_summary


def _fmt(value, spec):
    return "—" if value is None else format(value, spec)


COLUMNS = [("op", "op", "s"), ("case", "case", "s"), ("baseline", "baseline", "s"),
           ("baseline ms", "baseline_ms", ".2f"), ("sslfast ms", "sslfast_ms", ".2f"),
           ("speedup", "speedup", ".2f"), ("base MiB", "baseline_peak_mb", ".1f"),
           ("sslfast MiB", "sslfast_peak_mb", ".1f"), ("mem ratio", "memory_ratio", ".3f"),
           ("error", "max_error", ".1e"), ("tolerance", "tolerance", ".1e"), ("correct", "correct", "")]


def rows(records):
    for r in records:
        yield [_fmt(r.get(key), spec) if spec else ("yes" if r.get(key) else "NO") for _, key, spec in COLUMNS]


def print_table(records) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title="sslfast bench (speedup = baseline time / sslfast time; mem ratio = sslfast / baseline)")
    for title, _, spec in COLUMNS:
        table.add_column(title, justify="right" if spec and spec != "s" else "left")
    for row, r in zip(rows(records), records):
        table.add_row(*row, style=None if r.get("correct") else "red")
    Console(width=max(160, Console().width)).print(table)
    for r in records:
        if r.get("error"):
            print(f"  {r['op']}/{r['case']}: {r['error']}")
    for line in failure_reasons(records):
        print(f"sslfast bench: INCORRECT {line}", file=sys.stderr)


def failure_reasons(records) -> list:
    """One line per incorrect row: the case, its error, the tolerance and what it was compared with."""
    lines = []
    for r in records:
        if r.get("correct"):
            continue
        key = f"{r.get('op')}/{r.get('case')}"
        if r.get("why"):
            lines.append(r["why"])
        elif r.get("error"):
            lines.append(f"{key}: failed to run: {r['error']}")
        else:
            lines.append(f"{key}: error {r.get('max_error')} exceeds the tolerance {r.get('tolerance')}")
    return lines


def to_markdown(records, environment: dict | None = None) -> str:
    lines = []
    if environment:
        lines.append(f"Machine: **{machine_summary(environment)}** ({environment.get('device')}), "
                     f"torch {environment.get('torch')}, triton {environment.get('triton')}, "
                     f"{environment.get('date')}, commit `{(environment.get('git_commit') or '')[:10]}`  ")
        lines.append(f"Command: `{environment.get('command')}`")
        lines.append("")
    lines.append("| " + " | ".join(t for t, _, _ in COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    for row in rows(records):
        lines.append("| " + " | ".join(row) + " |")
    bounded = [r for r in records if r.get("bound_ratio") is not None]
    if bounded:
        lines.append("")
    for r in bounded:
        later = ""
        if r.get("step_ratio") is not None:
            later = (f"; each step after the first alone (the call's time less the same call cut to its first step: "
                     f"{r['sslfast_first_ms']:.1f} and {r['baseline_first_ms']:.1f} ms) {r['step_ratio']:.2f}× and "
                     f"{r['baseline_step_ratio']:.2f}×")
        lines.append(f"- {r['op']}/{r['case']}: sslfast takes {r['bound_ratio']:.2f}× and the baseline "
                     f"{r['baseline_bound_ratio']:.2f}× the time of {r['probe']} ({r['probe_ms']:.2f} ms per step, "
                     f"same run){later}")
    counted = [r for r in records if r.get("items") and r.get("sslfast_items_per_s")]
    if counted and not bounded:
        lines.append("")
    for r in counted:
        lines.append(f"- {r['op']}/{r['case']}: sslfast {r['sslfast_items_per_s']:.0f} {r['items']}/s, the baseline "
                     f"{r['baseline_items_per_s']:.0f} {r['items']}/s")
    return "\n".join(lines) + "\n"


def write_json(path: str, records, environment: dict) -> None:
    _write_atomically(path, {"environment": environment, "records": records}, indent=1)


def write_script_report(path: str, name: str, result, device: str = "cpu") -> None:
    """A result script's JSON: ``{"environment": ..., name: result}``, the environment naming the exact command."""
    import sys

    _write_atomically(path, {"environment": environment(device, [sys.executable] + sys.argv), name: result},
                      indent=2, default=str)


def _write_atomically(path: str, data, **dump_options) -> None:
    atomic_write_text(path, json.dumps(data, **dump_options))


def plot(path: str, records, environment: dict | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in records if r.get("speedup") is not None]
    if not done:
        return
    labels = [f"{r['op']}: {r['case']}" for r in done]
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.45 * len(done) + 1.8), sharey=True)
    ypos = range(len(done))
    colors = ["tab:green" if r["correct"] else "tab:red" for r in done]
    axes[0].barh(ypos, [r["speedup"] for r in done], color=colors)
    axes[0].axvline(1.0, color="black", lw=0.8)
    axes[0].set_xlabel("speedup over baseline (×, higher is better)\nred: wrong result")
    axes[0].set_yticks(list(ypos), labels, fontsize=8)
    axes[0].invert_yaxis()
    ratios = [r["memory_ratio"] if r.get("memory_ratio") is not None else 0.0 for r in done]
    axes[1].barh(ypos, ratios, color="tab:blue")
    axes[1].axvline(1.0, color="black", lw=0.8)
    axes[1].set_xlabel("extra peak memory,\nsslfast / baseline (lower is better)")
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    if environment:
        fig.suptitle(f"sslfast bench on {environment.get('device_name')} — {environment.get('date')}", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
