#!/usr/bin/env python3
"""The netns tests' checks of spliced's flows and status (lib.sh and the test_*.sh call it;
nothing passed from bash is evaluated). Reads `splicectl flows --json` or `splicectl status
--json` on stdin, as the subcommand says; an assertion that does not hold prints what is wrong
on stderr and exits 1 (the caller's `fail` says which check it was).

Flows (`splicectl flows --json` on stdin). FILTER: --src ADDR --dst ADDR --sport PORT
--dport PORT --state STATE --mode MODE --reason REASON, each an exact match ("" matches any):
  find FILTER...         the first flow that matches, as JSON; exit 1 (silently) when none
  count FILTER...        how many flows match
  list FILTER...         the flows that match, as a JSON list
  modes FILTER...        the matching flows counted by (mode, reason, proxy, state), the 8
                         commonest, as a Python dict
  all MODE REASON MIN PORTS
                         assert: at least MIN flows to the comma-separated PORTS (dport), and
                         every one of them in MODE/REASON
  clients MODE REASON [--proxy ID] PORT...
                         assert: a flow of every client port (sport) is listed, and the
                         youngest of each is in MODE/REASON (and bound to proxy ID)
  listed PORT...         exit 0 when a flow of every client port (sport) is listed, 1
                         (silently) when not
  bound ID               assert: every resilient flow is bound to proxy ID
  proxy-of PORT ID       assert: client port PORT has exactly one flow, bound to proxy ID

Status (`splicectl status --json` on stdin):
  proxy-listed (--pid PID | --name NAME)
                         exit 0 when status.proxies lists such a proxy, 1 (silently) when not
  proxy-id PID           the id of the listed proxy with that pid; exit 1 when none
  resilient-queues       assert: queue 0 (the ends') fail-open, queue 1 (the proxy's)
                         fail-closed, and both have seen packets
  queue-waits [--since FILE]
                         one line per queue that timed packets: how long they waited before
                         spliced read them (mean, max, the share over 100 ms); with --since, only
                         what was counted after FILE (a status saved earlier; no max then);
                         assert: every ends' queue that read packets timed some (the kernel's
                         stamps came)
  bypass-status          assert: what test_bypass_download_upload expects after its transfers
                         (queue 0 bound and busy, accept verdicts, uptime, flow and memory
                         sections)

Transfers (lib.sh xfers_*; no stdin):
  xfers-moved TMP XDIR NAME:KIND...
                         "NAME BYTES" for each transfer (KIND down or up): bytes the client
                         received (XDIR/got/NAME), or the server received from that client
                         (matched through xf-NAME.log's CONNECTED LOCAL= and TMP/xf-serve-recv.log;
                         behind source NAT, env XF_SNAT4 / XF_SNAT6 name the address the server sees)
"""
import argparse
import collections
import json
import os
import re
import sys


def load():
    return json.load(sys.stdin)


def problem(msg):
    print(msg, file=sys.stderr)


# --- flows ------------------------------------------------------------------------------
FILTERS = (('src', str), ('dst', str), ('sport', int), ('dport', int),
           ('state', str), ('mode', str), ('reason', str), ('joinedTo', str),
           ('joinOneWay', str))


def add_filters(p):
    for key, _ in FILTERS:
        p.add_argument('--' + key, default='', metavar=key.upper())


def matches(f, args):
    for key, kind in FILTERS:
        want = getattr(args, key)
        if want != '' and f.get(key) != kind(want):
            return False
    return True


def selected(args):
    return [f for f in load() if matches(f, args)]


def cmd_find(args):
    for f in selected(args):
        print(json.dumps(f, sort_keys=True))
        return 0
    return 1


def cmd_count(args):
    print(len(selected(args)))
    return 0


def cmd_list(args):
    print(json.dumps(selected(args), sort_keys=True))
    return 0


def cmd_modes(args):
    c = collections.Counter((f.get('mode'), f.get('reason'), f.get('proxy'), f.get('state'))
                            for f in selected(args))
    print(dict(c.most_common(8)))
    return 0


def cmd_all(args):
    ports = {int(p) for p in args.ports.split(',')}
    flows = [f for f in load() if f.get('dport') in ports]
    bad = [f for f in flows if f.get('mode') != args.mode or f.get('reason') != args.reason]
    for f in bad[:20]:
        problem('  not %s/%s: %s' % (args.mode, args.reason, json.dumps(f, sort_keys=True)))
    if len(flows) < args.min:
        problem('  only %d flows to ports %s, expected at least %d' % (len(flows), sorted(ports), args.min))
    return 1 if bad or len(flows) < args.min else 0


def cmd_clients(args):
    want = set(args.ports)
    byport = {}
    for f in load():
        p = f.get('sport')
        if p in want and (p not in byport or f.get('ageSeconds', 0) < byport[p].get('ageSeconds', 0)):
            byport[p] = f
    missing = sorted(want - set(byport))
    proxy = args.proxy
    bad = [f for f in byport.values()
           if f.get('mode') != args.mode or f.get('reason') != args.reason
           or (proxy is not None and f.get('proxy') != proxy)]
    for f in bad[:20]:
        problem('  not %s/%s%s: %s' % (args.mode, args.reason,
                                       ' with proxy %d' % proxy if proxy is not None else '',
                                       json.dumps(f, sort_keys=True)))
    if missing:
        problem('  no flow listed for client ports %s' % missing)
    return 1 if bad or missing else 0


def cmd_listed(args):
    """Exit 0 when every client port has a flow in the table (one pass over one listing)."""
    return 1 if set(args.ports) - {f.get('sport') for f in load()} else 0


def cmd_bound(args):
    bad = [f for f in load() if f.get('mode') == 'resilient' and f.get('proxy') != args.id]
    if bad:
        problem('flows with another proxy id than %d: %s' % (args.id, bad[:3]))
        return 1
    return 0


def cmd_proxy_of(args):
    got = [f.get('proxy') for f in load() if f.get('sport') == args.port]
    if got != [args.id]:
        problem("  the flows of client port %d are bound to proxies %s, expected exactly one, bound to %d"
                % (args.port, got, args.id))
        return 1
    return 0


# --- status -------------------------------------------------------------------------------
def cmd_proxy_listed(args):
    proxies = load().get('proxies', [])
    if args.pid is not None:
        return 0 if any(p.get('pid') == args.pid for p in proxies) else 1
    return 0 if any(p.get('name') == args.name for p in proxies) else 1


def cmd_proxy_id(args):
    for p in load().get('proxies', []):
        if p.get('pid') == args.pid:
            print(p['id'])
            return 0
    problem('no proxy with pid %d in status.proxies' % args.pid)
    return 1


def cmd_resilient_queues(_args):
    q = {x['number']: x for x in load()['queues']}
    bad = []
    if 0 not in q or q[0].get('failClosed') or q[0]['packets'] == 0:
        bad.append('queue 0: %s' % q.get(0))
    if 1 not in q or q[1].get('failClosed') is not True or q[1]['packets'] == 0:
        bad.append('queue 1: %s' % q.get(1))
    if bad:
        problem('; '.join(bad))
        return 1
    return 0


def cmd_queue_waits(args):
    untimed = []
    before = {}
    if args.since:
        with open(args.since) as f:
            before = {q['number']: q for q in json.load(f)['queues']}
    for q in load()['queues']:
        d = q.get('delay') or {}
        b = before.get(q['number'], {})
        bd = b.get('delay') or {}
        n = d.get('samples', 0) - bd.get('samples', 0)
        if n:
            buckets = [x - y for x, y in zip(d['buckets'], bd.get('buckets') or [0] * len(d['buckets']))]
            over = sum(c for bound, c in zip(d['boundsMicroseconds'] + [None], buckets) if bound is None or bound > 100000)
            mean = (d['totalMicroseconds'] - bd.get('totalMicroseconds', 0)) / n / 1000.0
            top = '' if args.since else ', max %.1f ms' % (d['maxMicroseconds'] / 1000.0)
            print('queue %d (%s): %d packets timed, mean %.1f ms%s, %.1f%% over 100 ms'
                  % (q['number'], q.get('role', '?'), n, mean, top, 100.0 * over / n))
        elif q.get('role') == 'ends' and q['packets'] > b.get('packets', 0):
            untimed.append(q['number'])
    if untimed:
        problem("the ends' queue(s) %s read packets but timed none: no kernel stamps (NFQA_TIMESTAMP)"
                % ', '.join(map(str, untimed)))
        return 1
    return 0


class Unmet(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise Unmet('status check: ' + msg)


def cmd_bypass_status(_args):
    d = load()
    try:
        qs = {q['number']: q for q in d['queues']}
        need(0 in qs, 'queue 0 missing from status: %r' % d['queues'])
        q = qs[0]
        need(q['packets'] > 1000, 'queue 0 saw only %r packets for 3 transfers of 64 MiB' % q['packets'])
        for k in ('queueDropped', 'userDropped'):
            need(isinstance(q.get(k), int), 'queue 0 has no kernel counter %s (is the queue bound?): %r' % (k, q))
        v = d['verdicts']
        need(v['accept'] > 0, 'no accept verdicts: %r' % v)
        need(d['uptimeSeconds'] > 0, 'uptimeSeconds is %r' % d['uptimeSeconds'])
        need(isinstance(d['flows']['total'], int) and isinstance(d['flows']['byState'], dict),
             'flows: %r' % d['flows'])
        need(isinstance(d['flows']['tableFull'], int), 'flows.tableFull missing')
        need(isinstance(d['memory'], dict), 'memory missing')
    except Unmet as e:
        problem(str(e))
        return 1
    return 0


# --- transfers ------------------------------------------------------------------------------
def size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def cmd_xfers_moved(args):
    accepted = {}
    try:
        with open(os.path.join(args.tmp, 'xf-serve-recv.log')) as f:
            for line in f:
                m = re.match(r'ACCEPTED CONN=(\d+) PEER=(\S+)$', line.strip())
                if m:
                    accepted[m.group(2)] = m.group(1)
    except OSError:
        pass
    for spec in args.specs:
        name, kind = spec.rsplit(':', 1)
        if kind == 'down':
            print(name, size(os.path.join(args.xdir, 'got', name)))
            continue
        tup = None
        try:
            with open(os.path.join(args.tmp, 'xf-%s.log' % name)) as f:
                for line in f:
                    if line.startswith('CONNECTED LOCAL='):
                        tup = line.strip()[len('CONNECTED LOCAL='):]
                        break
        except OSError:
            pass
        if tup and os.environ.get('XF_SNAT6') and tup.startswith('['):
            tup = '[%s]:%s' % (os.environ['XF_SNAT6'], tup.rsplit(':', 1)[1])
        elif tup and os.environ.get('XF_SNAT4') and not tup.startswith('['):
            tup = '%s:%s' % (os.environ['XF_SNAT4'], tup.rsplit(':', 1)[1])
        n = accepted.get(tup) if tup else None
        print(name, size(os.path.join(args.xdir, 'recv', n)) if n else 0)
    return 0


def parser():
    ap = argparse.ArgumentParser(prog='flowcheck.py', description=__doc__.split('\n\n', 1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True, metavar='SUBCOMMAND')

    def add(name, fn, helptext):
        p = sub.add_parser(name, help=helptext)
        p.set_defaults(fn=fn)
        return p

    for name, fn, h in (('find', cmd_find, 'the first matching flow (exit 1 when none)'),
                        ('count', cmd_count, 'how many flows match'),
                        ('list', cmd_list, 'the matching flows, as JSON'),
                        ('modes', cmd_modes, 'matching flows counted by mode, reason, proxy, state')):
        add_filters(add(name, fn, h))
    p = add('all', cmd_all, 'every flow to PORTS in MODE/REASON, at least MIN of them')
    p.add_argument('mode')
    p.add_argument('reason')
    p.add_argument('min', type=int)
    p.add_argument('ports', help='comma-separated destination ports')
    p = add('clients', cmd_clients, 'the youngest flow of each client port in MODE/REASON')
    p.add_argument('mode')
    p.add_argument('reason')
    p.add_argument('--proxy', type=int, default=None, help='and bound to this proxy id')
    p.add_argument('ports', type=int, nargs='*', metavar='PORT')
    p = add('listed', cmd_listed, 'every client PORT has a flow listed (exit 1 when one has none)')
    p.add_argument('ports', type=int, nargs='+', metavar='PORT')
    p = add('bound', cmd_bound, 'every resilient flow bound to proxy ID')
    p.add_argument('id', type=int)
    p = add('proxy-of', cmd_proxy_of, 'client port PORT has one flow, bound to proxy ID')
    p.add_argument('port', type=int)
    p.add_argument('id', type=int)

    p = add('proxy-listed', cmd_proxy_listed, 'status.proxies lists the proxy')
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument('--pid', type=int)
    g.add_argument('--name')
    p = add('proxy-id', cmd_proxy_id, 'the id of the proxy with that pid')
    p.add_argument('pid', type=int)
    add('resilient-queues', cmd_resilient_queues, 'queue 0 fail-open, queue 1 fail-closed, both busy')
    p = add('queue-waits', cmd_queue_waits, "the queues' waits; the ends' queues timed their packets")
    p.add_argument('--since', metavar='FILE', help='a status saved earlier: only what was counted after it')
    add('bypass-status', cmd_bypass_status, "test_bypass_download_upload's status checks")

    p = add('xfers-moved', cmd_xfers_moved, 'bytes moved by each transfer')
    p.add_argument('tmp')
    p.add_argument('xdir')
    p.add_argument('specs', nargs='*', metavar='NAME:KIND')
    return ap


def main(argv):
    args = parser().parse_args(argv[1:])
    try:
        return args.fn(args)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        # Not the JSON the check expects (or none at all): the check does not hold.
        problem('flowcheck.py %s: %r' % (args.cmd, e))
        return 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
