#!/usr/bin/env python3
"""Checks for fleet_test.sh (docs/relay-sim.md, "Fleet test").

  fleet_check.py export LOG OFFSET END [VERSION]
                                          the first complete CSV export (relay SIGUSR2) in LOG after
                                          byte OFFSET (complete: a log line follows, or with END=1
                                          the file ends after it), as one JSON line: rows, by_state,
                                          current_at (version -> n), upgrading, min_checkin, or "null";
                                          with VERSION just "ROWS UPGRADING CURRENT_AT_VERSION" or "-"
  fleet_check.py summary SUMMARY PARAMS   the checks on relay-sim's summary; PARAMS is a JSON file
                                          with n, cap1, bw1, cap2, bw2, switch_before_ms,
                                          switch_after_ms (unix), version, relay_max_upgrading,
                                          relay_max_upgrading_after, relay_log, relay_cpu_seconds,
                                          export (the final export, as above), builds_utc.
Prints one line per check ("ok: ..." / "FAIL: ..."); exit 0 when all pass, 1 otherwise.
"""
import csv
import io
import json
import sys


def parse_export(log, offset, allow_end):
    with open(log, "rb") as f:
        f.seek(offset)
        data = f.read().decode("utf-8", "replace")
    start = data.find('"id","platform","version","state","detail","last_checkin"')
    if start < 0:
        return None
    lines = []
    complete = False
    for line in data[start:].split("\n")[1:]:
        if not line.startswith('"'):
            complete = line.startswith("relay:")  # written under the log lock: the block is whole
            break
        lines.append(line.rstrip("\r"))
    if not complete and not (allow_end and data.endswith("\n")):
        return None
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    out = {"rows": len(rows), "by_state": {}, "current_at": {}, "upgrading": 0, "min_checkin": None,
           "not_current": []}
    for r in rows:
        if len(r) != 6:
            continue
        _id, _platform, version, state, _detail, checkin = r
        out["by_state"][state] = out["by_state"].get(state, 0) + 1
        if state == "current":
            out["current_at"][version] = out["current_at"].get(version, 0) + 1
        elif len(out["not_current"]) < 5:
            out["not_current"].append(r)
        if state == "upgrading":
            out["upgrading"] += 1
        if out["min_checkin"] is None or checkin < out["min_checkin"]:
            out["min_checkin"] = checkin
    return out


class Checks:
    def __init__(self):
        self.failed = 0

    def check(self, ok, text):
        print(("ok:   " if ok else "FAIL: ") + text, flush=True)
        if not ok:
            self.failed += 1


def windows(series, slot_ms, begin_ms, end_ms):
    """Sums of every 1-second window [t, t+1000) on the slot grid with begin <= t, t+1000 <= end."""
    per = 1000 // slot_ms
    first = -(-int(begin_ms) // slot_ms)  # ceil
    last = int(end_ms) // slot_ms - per    # last start slot
    return [(i * slot_ms, sum(series[i:i + per])) for i in range(first, last + 1) if i + per <= len(series)]


def check_summary(summary_path, params_path):
    s = json.load(open(summary_path))
    p = json.load(open(params_path))
    c = Checks()
    n, version = p["n"], p["version"]
    t = s.get("io_thread", {})
    print(f"info: CPU: relay {p.get('relay_cpu_seconds')} s, relay-sim I/O thread {t.get('cpu_seconds', 0):.1f} s, "
          f"in {s['elapsed_seconds']:.1f} s; longest gap between the simulator's 20 ms sweeps "
          f"{t.get('max_sweep_gap_ms', 0):.0f} ms", flush=True)
    slot = s["slot_ms"]
    # 1. the whole fleet at the new version (simulator and relay export)
    c.check(s.get("until_version", {}).get("reached") is True and s["by_version"] == {version: n},
            f"fleet of {n} at {version}: by_version {s['by_version']}, installed {s['upgrades']['installed']}, "
            f"failed {s['upgrades']['failed']}, elapsed {s['elapsed_seconds']:.1f} s")
    c.check(s["upgrades"]["failed"] == 0 and s["upgrades"]["installed"] >= n,
            f"every client installed once or more, none failed ({s['upgrades']})")
    e = p["export"]
    ok = e is not None and e["rows"] == n and e["current_at"] == {version: n}
    c.check(ok, f"relay export (SIGUSR2 CSV): {e['rows'] if e else 0} rows, current at {e['current_at'] if e else {}}"
                f" by state {e['by_state'] if e else {}}" + ("" if ok or not e else f" e.g. {e['not_current']}"))
    if e:
        c.check(e["min_checkin"] is not None and e["min_checkin"] >= p["builds_utc"],
                f"every last check-in ({e['min_checkin']}) is at or after the builds were given ({p['builds_utc']})")

    # 2. concurrency cap (simulator's and relay's view)
    cap1, cap2 = p["cap1"], p["cap2"]
    c.check(s["max_concurrent_downloading"] <= cap1,
            f"concurrency: simulator max {s['max_concurrent_downloading']} <= cap {cap1}; "
            f"relay export max upgrading {p['relay_max_upgrading']} <= {cap1}")
    c.check(p["relay_max_upgrading"] <= cap1, f"relay's view of upgrading clients {p['relay_max_upgrading']} <= cap {cap1}")

    # 3. bandwidth, while a backlog exists
    switch_before = p["switch_before_unix_ms"] - s["start_unix_ms"]
    switch_after = p["switch_after_unix_ms"] - s["start_unix_ms"]
    begin = s["first_chunk_ms"] + 1000
    end = s["last_waiting_ms"]
    bytes_ = s["build_bytes_per_slot"]
    guard = 500  # the new rate applies from the next grant; chunks in flight still arrive
    phases = [("phase 1", p["bw1"], begin, min(end, switch_before)),
              ("phase 2", p["bw2"], max(begin, switch_after + guard), end)]
    for name, bw, b, en in phases:
        w = windows(bytes_, slot, b, en)
        if not w:
            c.check(False, f"bandwidth {name}: no whole 1-s window of backlog in [{b:.0f}, {en:.0f}) ms")
            continue
        worst = max(v for _, v in w)
        lo, hi = w[0][0], w[-1][0] + 1000
        used = sum(bytes_[lo // slot: hi // slot]) / ((hi - lo) / 1000.0) / bw
        c.check(worst <= 1.05 * bw,
                f"bandwidth {name} ({bw} B/s): worst 1-s window {worst / bw:.3f} x cap over {len(w)} windows "
                f"(backlog {lo / 1000:.1f}..{hi / 1000:.1f} s)")
        c.check(used >= 0.95, f"bandwidth {name}: average use {used:.3f} of the cap over {(hi - lo) / 1000:.1f} s")

    # 5. live settings: after the change, the concurrency follows the new cap
    down = s["downloading_per_slot"]
    after = [(i, v) for i, v in enumerate(down) if i * slot >= switch_after and i * slot < end]
    settle = next((i for i, v in after if v <= cap2), None)
    if settle is None:
        c.check(False, f"settings change: concurrency never went down to the new cap {cap2}")
    else:
        later = [v for i, v in after if i >= settle]
        c.check(max(later) <= cap2 and max(later) == cap2 and p["relay_max_upgrading_after"] <= cap2,
                f"settings change (cap {cap1} -> {cap2}, {p['bw1']} -> {p['bw2']} B/s): at cap {cap2} "
                f"{(settle * slot - switch_after) / 1000:.2f} s after SIGHUP, then max {max(later)} (simulator), "
                f"relay export max {p['relay_max_upgrading_after']} once settled")

    # 4. the technician's front request, in the relay's order (its log: the scheduler's calls on its
    # one I/O thread, in order) and on the wire (the simulator's kernel arrival times)
    f = s.get("front_request", {})
    target = f.get("client_id")
    offered, refusal = {}, None
    with open(p["relay_log"], encoding="utf-8", errors="replace") as log:
        for i, line in enumerate(log):
            if line.startswith("relay: client '") and line.rstrip().endswith("': upgrade to " + version + " offered"):
                offered.setdefault(line[len("relay: client '"):line.index("': upgrade")], i)
            elif refusal is None and line.startswith("relay: closing console") and f"for client '{target}'" in line:
                refusal = i
    target_at = offered.get(target)
    between = [k for k, i in offered.items() if refusal is not None and target_at is not None and refusal < i < target_at]
    c.check(refusal is not None and target_at is not None and target_at > refusal and not between,
            f"front request (relay's order): after refusing the console, the relay offered the build to {target} "
            f"first: {len(between)} others in between {between[:5]}")
    early = [k for k in f.get("others_between_ids", []) if offered.get(k, 1 << 62) > (refusal or 0)]
    c.check(not early,
            f"front request (wire order): the {f.get('others_started_between')} other UPGRADEs written after the answer "
            f"and before {target}'s were all offered by the relay before the refusal (queued writes): "
            f"{len(early)} were not {early[:5]}")
    c.check(f.get("done") and f.get("answer") == "client_busy" and "front" in f.get("message", ""),
            f"front request: {f.get('client_id')} answered {f.get('answer')} '{f.get('message')}' "
            f"with {f.get('waiting_at_answer')} others waiting")
    c.check(f.get("started") and f.get("waiting_at_answer", 0) >= 100,
            f"front request: its UPGRADE came {f.get('wait_ms', 0):.0f} ms after the answer; on the wire "
            f"{f.get('others_started_between')} other UPGRADEs between "
            f"({f.get('others_started_while_asking')} written while the OPEN was in flight, {f.get('others_read_after_answer')} of them read after the answer)")
    return 0 if c.failed == 0 else 1


def main():
    if len(sys.argv) in (5, 6) and sys.argv[1] == "export":
        e = parse_export(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1")
        if len(sys.argv) == 6:  # brief: ROWS UPGRADING CURRENT_AT_VERSION
            print("-" if e is None else f"{e['rows']} {e['upgrading']} {e['current_at'].get(sys.argv[5], 0)}")
        else:
            print(json.dumps(e))
        return 0
    if len(sys.argv) == 4 and sys.argv[1] == "summary":
        return check_summary(sys.argv[2], sys.argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
