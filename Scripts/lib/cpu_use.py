#!/usr/bin/env python3
"""Where a benchmark case's CPU time went (tcpsplice benchmarks; stdlib only, Linux /proc).

  cpu_use.py snapshot FILE
      writes the machine's CPU counters (/proc/stat: user, nice, system, idle,
      iowait, irq, softirq, steal) and every process's user + system ticks, by
      command name, to FILE (JSON).
  cpu_use.py diff BEFORE AFTER [--requests N] [--ended COMMAND=SECONDS ...] [--pids PID[,PID...]]
      prints (JSON) what happened between the two snapshots: seconds elapsed
      (by the counters), how busy the cores were (percent of all cores), the CPU
      seconds spent in user space, in the kernel for processes, in soft and hard
      interrupts (the kernel's forwarding and netfilter mostly run there), and the
      CPU seconds of each command that used any (threads counted in their process).
      A process that ended in between is not in AFTER: --ended gives its CPU
      seconds as its parent measured them (bash's `times`, for the load generator).
      With --requests, busy CPU milliseconds per request. With --pids, the CPU
      seconds of each of those processes (`pids_s`: PID -> [command, seconds]; 0
      for one gone by AFTER, all of its time for one new since BEFORE) and their sum (`pids_total_s`).

Namespaces share one kernel and one /proc, so one snapshot covers the client, the
router and the server at once: the busy share is the whole machine's.
"""

import json
import os
import sys


def snapshot():
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:9]]
    procs = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                text = f.read()
        except OSError:
            continue
        # comm is in parentheses and may hold spaces
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        procs[pid] = [comm, int(fields[11]) + int(fields[12])]  # utime + stime
    return {"cpu": cpu, "procs": procs}


def diff(a, b, requests, ended, pids=()):
    hz = os.sysconf("SC_CLK_TCK")
    cores = os.cpu_count() or 1
    d = [y - x for x, y in zip(a["cpu"], b["cpu"])]
    user, nice, system, idle, iowait, irq, softirq, steal = d
    total = sum(d)
    busy = total - idle - iowait
    by_comm = {}
    for pid, (comm, ticks) in b["procs"].items():
        before = a["procs"].get(pid)
        used = ticks - (before[1] if before and before[0] == comm else 0)
        if used > 0:
            by_comm[comm] = by_comm.get(comm, 0) + used
    for comm, seconds in ended.items():
        by_comm[comm] = by_comm.get(comm, 0) + round(seconds * hz)
    out = {
        "seconds": round(total / hz / cores, 2),
        "busy_pct": round(100.0 * busy / total, 1) if total else None,
        "user_s": round((user + nice) / hz, 2),
        "system_s": round(system / hz, 2),
        "interrupts_s": round((irq + softirq) / hz, 2),
        "by_command_s": {k: round(v / hz, 2) for k, v in sorted(by_comm.items(), key=lambda kv: -kv[1])[:12]},
    }
    if requests:
        out["busy_ms_per_request"] = round(1000.0 * busy / hz / requests, 3)
    if pids:
        each = {}
        for pid in map(str, pids):
            before, after = a["procs"].get(pid), b["procs"].get(pid)
            if after is None:   # gone: its time is lost with it (bash's `times` for a child: --ended)
                each[pid] = [(before or ["?"])[0], 0.0]
                continue
            since = before[1] if before and before[0] == after[0] else 0
            each[pid] = [after[0], round((after[1] - since) / hz, 2)]
        out["pids_s"] = each
        out["pids_total_s"] = round(sum(s for _, s in each.values()), 2)
    return out


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "snapshot":
        with open(args[1], "w") as f:
            json.dump(snapshot(), f)
        return 0
    if len(args) >= 3 and args[0] == "diff":
        usage = "cpu_use.py: diff BEFORE AFTER [--requests N] [--ended COMMAND=SECONDS ...] [--pids PID[,PID...]]"
        requests, ended, pids, rest = 0, {}, [], args[3:]
        while rest:
            if len(rest) < 2:
                sys.exit(usage)
            flag, value, rest = rest[0], rest[1], rest[2:]
            if flag == "--requests" and value.isdigit():
                requests = int(value)
            elif flag == "--pids" and all(x.isdigit() for x in value.split(",") if x):
                pids = [x for x in value.split(",") if x]
            elif flag == "--ended" and "=" in value:
                comm, seconds = value.split("=", 1)
                try:
                    ended[comm] = ended.get(comm, 0.0) + float(seconds)
                except ValueError:
                    sys.exit("%s: not a number of seconds in --ended %s" % (usage, value))
            else:
                sys.exit(usage)
        with open(args[1]) as f:
            a = json.load(f)
        with open(args[2]) as f:
            b = json.load(f)
        print(json.dumps(diff(a, b, requests, ended, pids), sort_keys=True))
        return 0
    sys.exit(__doc__.split("\n\n", 1)[1].split("\n\n", 1)[0])


if __name__ == "__main__":
    sys.exit(main())
