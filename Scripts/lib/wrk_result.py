"""wrk's text output as a dict, and the problems it shows (used by bench-connrate.sh and
bench-balancer.sh): requests/s, requests and seconds, latency percentiles and average/max (ms),
socket errors, non-2xx/3xx answers; `problems` lists what makes the figure unusable."""
import re

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def ms(v, u):
    return float(v) * UNIT_MS[u]


def parse(out, err, rc, r):
    """Fills `r` (which has a "problems" list) from wrk's stdout `out`, stderr `err` and exit
    status `rc`; returns it."""
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", out, re.M)
    r["requests"] = int(m.group(1)) if m else None
    r["seconds"] = round(ms(m.group(2), m.group(3)) / 1e3, 3) if m else None
    for p in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s|m|h)\s*$" % p, out, re.M)
        r["p%s_ms" % p] = round(ms(m.group(1), m.group(2)), 3) if m else None
    m = re.search(r"^\s+Latency\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)", out, re.M)
    if m:
        r["avg_ms"] = round(ms(m.group(1), m.group(2)), 3)
        r["max_ms"] = round(ms(m.group(5), m.group(6)), 3)
    # wrk prints these two lines only when a count is not zero.
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m \
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non_2xx_3xx"] = int(m.group(1)) if m else 0
    if int(rc) != 0:
        r["problems"].append("wrk exited with status %s" % rc)
    if err:
        r["problems"].append("wrk stderr: " + err[:200].replace("\n", " "))
    if r["rps"] is None or r["requests"] is None:
        r["problems"].append("no result in wrk's output")
    elif r["requests"] == 0:
        r["problems"].append("no request completed")
    errs = {k: v for k, v in r["errors"].items() if v}
    if errs:
        r["problems"].append("socket errors: " + ", ".join("%s %d" % kv for kv in errs.items()))
    if r["non_2xx_3xx"]:
        r["problems"].append("%d responses not 2xx/3xx" % r["non_2xx_3xx"])
    return r
