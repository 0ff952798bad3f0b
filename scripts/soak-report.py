#!/usr/bin/env python3
"""Judges and charts a soak run written by scripts/soak.sh (standard library only).

    soak-report.py OUT_DIR [--harness-exit N] [--duration S] [--restart-every S]
                   [--rollouts N --rollout-settings TEXT] [--max-reconnects N]

Reads OUT_DIR/{samples,redis,events}.csv and loadtest.json; writes OUT_DIR/rss.svg and
OUT_DIR/summary.md; exits 1 when the soak fails:

- any lost, duplicated or out-of-order update in the harness's accounting, or a harness exit
  status other than 0 (it runs with --tolerate-errors, so publish errors alone do not fail it);
- memory growth that does not plateau. A node *segment* is one process lifetime (between
  restarts), sampled while the harness runs. Split its samples in thirds; the first is warm-up.
  The segment fails when the median RSS of the last third exceeds the median of the middle
  third by more than 20 % AND by more than 20 MiB (both, so neither noise on a small heap nor a
  few MiB on a big one fail it). Segments shorter than 6 samples are not judged. Redis
  used_memory over the whole run is judged by the same rule (history is capped, so it must
  plateau too);
- with --max-reconnects N, a subscriber that opened more than N connections after its first (a
  rolling update that replaces every pod at once must move each client once).

With --rollouts, the summary also times each rolling update from the events soak.sh recorded and
shows how many subscribers reconnected how many times.
"""

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

GROWTH_RATIO = 0.20
GROWTH_BYTES = 20 * 1024 * 1024
MIN_SAMPLES = 6
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def growth(values):
    """(middle-third median, last-third median, grew too much?) of a series, or None if short."""
    if len(values) < MIN_SAMPLES:
        return None
    third = len(values) // 3
    middle = statistics.median(values[third : 2 * third])
    last = statistics.median(values[2 * third :])
    grew = last - middle > GROWTH_BYTES and last > middle * (1 + GROWTH_RATIO)
    return middle, last, grew


def mib(b):
    return f"{b / 1048576:.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--harness-exit", type=int, default=0)
    ap.add_argument("--duration", type=int, default=0)
    ap.add_argument("--restart-every", type=int, default=0)
    ap.add_argument("--rollouts", type=int, default=0)
    ap.add_argument("--rollout-settings", default="")
    ap.add_argument("--max-reconnects", type=int, default=None)
    args = ap.parse_args()
    out = args.out

    events = read_csv(out / "events.csv")
    t0 = next(float(e["unix_s"]) for e in events if e["event"] == "loadtest-start")
    t_end = next(
        (float(e["unix_s"]) for e in events if e["event"] == "loadtest-end"), float("inf")
    )
    ports = sorted({e["port"] for e in events if e["port"] != "all"})
    names = {p: f"node{i + 1} (:{p})" for i, p in enumerate(ports)}

    # Samples while the harness ran, per port, cut into segments by pid.
    segments = {p: [] for p in ports}  # port -> [ {pid, t:[], rss:[] (bytes), fds:[], subs:[]} ]
    for row in read_csv(out / "samples.csv"):
        t = float(row["unix_s"])
        rss = num(row["rss_kib"])
        if not (t0 <= t <= t_end) or rss is None or row["port"] not in segments:
            continue
        segs = segments[row["port"]]
        if not segs or segs[-1]["pid"] != row["pid"]:
            segs.append({"pid": row["pid"], "t": [], "rss": [], "fds": [], "subs": []})
        s = segs[-1]
        s["t"].append((t - t0) / 60)
        s["rss"].append(rss * 1024)
        s["fds"].append(num(row["fds"]) or 0)
        s["subs"].append(num(row["subscribers"]) or 0)

    redis = [
        ((float(r["unix_s"]) - t0) / 60, num(r["used_memory"]))
        for r in read_csv(out / "redis.csv")
        if t0 <= float(r["unix_s"]) <= t_end and num(r["used_memory"]) is not None
    ]

    report = json.loads((out / "loadtest.json").read_text()) if (out / "loadtest.json").exists() else None

    failures = []
    if args.harness_exit != 0:
        failures.append(f"the harness exited with status {args.harness_exit}")
    if report is None:
        failures.append("no loadtest.json: the harness did not finish")
        acc = {}
    else:
        acc = report["delivery"]  # the accounting is flattened into it
        for key in ("lost", "duplicated", "out_of_order"):
            if acc.get(key, 0) > 0:
                failures.append(f"{acc[key]} updates {key.replace('_', ' ')}")
        if report.get("loss_detected") and not any("updates" in f for f in failures):
            failures.append("the harness detected loss")
        spread = {int(k): v for k, v in (acc.get("subscribers_by_reconnects") or {}).items()}
        if args.max_reconnects is not None and spread:
            over = sum(v for k, v in spread.items() if k > args.max_reconnects)
            if over:
                failures.append(f"{over} subscribers reconnected more than {args.max_reconnects} times "
                                f"(most: {max(spread)})")

    # Per-segment memory verdicts.
    seg_rows = []
    for p in ports:
        for k, s in enumerate(segments[p], 1):
            g = growth(s["rss"])
            if g is None:
                verdict = "too short to judge"
            elif g[2]:
                verdict = "**GROWTH**"
                failures.append(
                    f"{names[p]} segment {k} (pid {s['pid']}): RSS median {mib(g[0])} -> {mib(g[1])} MiB "
                    "from the middle to the last third of its life"
                )
            else:
                verdict = "plateau"
            seg_rows.append((p, k, s, g, verdict))
    redis_growth = growth([v for _, v in redis])
    if redis_growth and redis_growth[2]:
        failures.append(
            f"Redis used_memory median {mib(redis_growth[0])} -> {mib(redis_growth[1])} MiB "
            "from the middle to the last third of the run"
        )

    restarts = []
    for e in events:
        if e["event"].startswith("stop-") or e["event"] == "forced-kill":
            restarts.append(((float(e["unix_s"]) - t0) / 60, e["port"], e["event"], e["pid"]))

    write_svg(out / "rss.svg", ports, names, segments, redis, restarts)
    write_summary(out, args, ports, names, seg_rows, redis, redis_growth, restarts, report, acc, failures)
    for f in failures:
        print(f"SOAK FAILURE: {f}", file=sys.stderr)
    return 1 if failures else 0


def rollout_timeline(events, t0):
    """(start, first ready, end, most old pods draining at once) of each rolling update, in
    seconds since the harness started. A pod drains from its SIGTERM until it exits."""
    rows, current, draining, most = [], None, set(), 0
    for e in events:
        t = float(e["unix_s"]) - t0
        kind = e["event"]
        if kind == "rollout-start":
            current, draining, most = [t, None], set(), 0
        elif current is None:
            continue
        elif kind == "ready" and current[1] is None:
            current[1] = t
        elif kind == "stop-TERM":
            draining.add(e["port"])
            most = max(most, len(draining))
        elif kind in ("exited", "forced-kill"):
            draining.discard(e["port"])
        elif kind == "rollout-end":
            rows.append((current[0], current[1] if current[1] is not None else t, t, most))
            current = None
    return rows


def write_svg(path, ports, names, segments, redis, restarts):
    """Three stacked panels over time: RSS per node, subscribers per node, Redis used_memory."""
    width, left, right, panel_h, gap, top = 900, 70, 20, 180, 50, 60
    all_t = [t for p in ports for s in segments[p] for t in s["t"]] + [t for t, _ in redis] + [0]
    t_max = max(all_t) or 1
    x = lambda t: left + (width - left - right) * t / t_max  # noqa: E731
    parts = []

    def panel(index, title, series, unit_div, unit):
        y0 = top + index * (panel_h + gap)
        values = [v for _, pts, _ in series for _, v in pts] or [0]
        v_max = max(values) / unit_div * 1.1 or 1
        y = lambda v: y0 + panel_h - panel_h * (v / unit_div) / v_max  # noqa: E731
        parts.append(f'<text x="{left}" y="{y0 - 8}" font-size="13" font-weight="bold">{title}</text>')
        parts.append(f'<rect x="{left}" y="{y0}" width="{width - left - right}" height="{panel_h}" fill="none" stroke="#999"/>')
        for i in range(5):
            v = v_max * i / 4
            text = f"{v:.0f}" if v_max >= 10 else f"{v:.1f}"
            parts.append(f'<text x="{left - 6}" y="{y(v * unit_div) + 4:.1f}" font-size="10" text-anchor="end">{text}{unit}</text>')
            parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v * unit_div):.1f}" y2="{y(v * unit_div):.1f}" stroke="#eee"/>')
        for minute in range(0, int(t_max) + 1, max(1, int(t_max) // 12 or 1)):
            parts.append(f'<text x="{x(minute):.1f}" y="{y0 + panel_h + 14}" font-size="10" text-anchor="middle">{minute}m</text>')
        for t, port, event, _ in restarts:
            colour = "#000" if event == "stop-KILL" or event == "forced-kill" else "#888"
            parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y0}" y2="{y0 + panel_h}" stroke="{colour}" stroke-dasharray="4,3"/>')
            if index == 0:
                label = f"{'KILL' if 'KILL' in event or 'kill' in event else 'TERM'} :{port}"
                parts.append(f'<text x="{x(t) + 3:.1f}" y="{y0 + 12}" font-size="9">{label}</text>')
        for colour, pts, _ in series:
            if len(pts) > 1:
                d = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
                parts.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="1.5"/>')

    rss_series, sub_series = [], []
    for i, p in enumerate(ports):
        for s in segments[p]:
            rss_series.append((COLORS[i % len(COLORS)], list(zip(s["t"], s["rss"])), names[p]))
            sub_series.append((COLORS[i % len(COLORS)], list(zip(s["t"], s["subs"])), names[p]))
    panel(0, "RSS per node (dashed: restarts, black = SIGKILL)", rss_series, 1048576, " MiB")
    panel(1, "Subscribers per node (/metrics quicksilver_subscribers)", sub_series, 1, "")
    panel(2, "Redis used_memory", [("#ff7f0e", redis, "redis")], 1048576, " MiB")
    legend_y = top + 3 * (panel_h + gap) - 20
    step = 160 if len(ports) <= 3 else 110
    for i, p in enumerate(ports):
        parts.append(f'<rect x="{left + i * step}" y="{legend_y - 9}" width="12" height="10" fill="{COLORS[i % len(COLORS)]}"/>')
        parts.append(f'<text x="{left + i * step + 16}" y="{legend_y}" font-size="11">{names[p]}</text>')
    legend_y += 16 if len(ports) > 3 else 0
    parts.append(f'<text x="{left + (0 if len(ports) > 3 else 3 * step)}" y="{legend_y}" font-size="11">x axis: minutes since the harness started</text>')
    height = legend_y + 10
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
        f'<text x="{left}" y="22" font-size="15" font-weight="bold">Quicksilver soak: collab through nginx, 3 nodes, rolling restarts</text>'
        + "".join(parts)
        + "</svg>\n"
    )
    path.write_text(svg)


def write_summary(out, args, ports, names, seg_rows, redis, redis_growth, restarts, report, acc, failures):
    lines = ["# Soak run", ""]
    lines.append(f"**Verdict: {'FAILED' if failures else 'passed'}**")
    for f in failures:
        lines.append(f"- {f}")
    lines.append("")
    if report:
        cfg = report.get("config", {})
        sc = cfg.get("scenario", {})
        lines.append(
            f"{args.duration} s of `collab`: {sc.get('documents')} documents x {sc.get('editors')} editors at "
            f"{sc.get('editor_rate')} update/s each ({cfg.get('publishers')} publishing lanes, "
            f"{'private' if sc.get('private') else 'public'} updates, {cfg.get('payload_bytes')}-byte payloads); "
            f"subscribers and publishers through nginx ({', '.join(cfg.get('sub_urls', []))}); "
            + (f"a rolling update of the 3 nodes every {args.restart_every} s ({args.rollouts} in all; "
               f"{args.rollout_settings})." if args.rollouts else
               f"one node restarted every {args.restart_every} s, in turn.")
        )
        lines.append("")
        pub = report["publish"]
        d = report["delivery"]
        lines += [
            "## Updates",
            "",
            "| published (attempted) | acknowledged | publish failed | deliveries expected | received | lost | duplicated | out of order | reconnects | disconnects by hub |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {pub['attempted']} | {pub['acked']} | {pub['failed']} | {acc['expected']} | {acc['received']} | "
            f"{acc['lost']} | {acc['duplicated']} | {acc['out_of_order']} | {acc['reconnects']} | {acc['disconnects']} |",
            "",
            f"Latency publish → receive: p50 {d['latency']['p50_ms']:.1f} ms, p99 {d['latency']['p99_ms']:.1f} ms, "
            f"p99.9 {d['latency']['p999_ms']:.1f} ms, max {d['latency']['max_ms']:.0f} ms; "
            f"{d['deliveries_per_second']:.0f} deliveries/s; publish round trip p50 {pub['latency']['p50_ms']:.1f} ms.",
        ]
        spread = {int(k): v for k, v in (acc.get("subscribers_by_reconnects") or {}).items()}
        if spread:
            subs = sum(spread.values())
            mean = sum(k * v for k, v in spread.items()) / subs
            lines.append("")
            lines.append(
                "Reconnections per subscriber: "
                + ", ".join(f"{v} subscribers {k}" for k, v in sorted(spread.items()))
                + f" (mean {mean:.2f}, most {max(spread)}"
                + (f"; {mean / args.rollouts:.2f} per rolling update" if args.rollouts else "")
                + ")."
            )
        if pub.get("errors"):
            lines.append("")
            lines.append("Publish errors (first few): " + "; ".join(f"`{e}`" for e in pub["errors"][:5]))
        if acc.get("examples"):
            lines.append("")
            lines.append("Problem examples: " + "; ".join(f"`{e}`" for e in acc["examples"][:5]))
        lines.append("")
    events = read_csv(out / "events.csv")
    t0 = next(float(e["unix_s"]) for e in events if e["event"] == "loadtest-start")
    rollout_rows = rollout_timeline(events, t0)
    if rollout_rows:
        lines += [
            "## Rolling updates",
            "",
            "| # | started (s) | first new pod ready (s) | last old pod gone (s) | took (s) | old pods draining at once (most) |",
            "|---|---|---|---|---|---|",
        ]
        lines += [f"| {i} | {a:.1f} | {r:.1f} | {b:.1f} | {b - a:.1f} | {c} |"
                  for i, (a, r, b, c) in enumerate(rollout_rows, 1)]
        lines.append("")
    lines += [
        "## Restarts",
        "",
        "| at (min) | node | how | old pid |",
        "|---|---|---|---|",
    ]
    for t, port, event, pid in restarts:
        lines.append(f"| {t:.1f} | {names.get(port, port)} | {event} | {pid} |")
    lines += [
        "",
        "## Memory per node lifetime (RSS, MiB)",
        "",
        "Rule: fail when the last third's median exceeds the middle third's by > 20 % and > 20 MiB.",
        "",
        "| node | segment | pid | from–to (min) | samples | min | median | max | middle-third median | last-third median | max fds | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p, k, s, g, verdict in seg_rows:
        mid, last = (mib(g[0]), mib(g[1])) if g else ("–", "–")
        lines.append(
            f"| {names[p]} | {k} | {s['pid']} | {s['t'][0]:.1f}–{s['t'][-1]:.1f} | {len(s['rss'])} | "
            f"{mib(min(s['rss']))} | {mib(statistics.median(s['rss']))} | {mib(max(s['rss']))} | {mid} | {last} | "
            f"{max(s['fds']):.0f} | {verdict} |"
        )
    lines.append("")
    if redis:
        vals = [v for _, v in redis]
        g = redis_growth
        lines.append(
            f"Redis used_memory: min {mib(min(vals))}, median {mib(statistics.median(vals))}, max {mib(max(vals))} MiB"
            + (f"; middle third {mib(g[0])} → last third {mib(g[1])} MiB ({'GROWTH' if g[2] else 'plateau'})" if g else "")
            + "."
        )
        lines.append("")
    lines.append("Chart: `rss.svg`. Raw samples: `samples.csv`, `redis.csv`, `events.csv`; harness report: `loadtest.json`.")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
