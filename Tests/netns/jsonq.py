#!/usr/bin/env python3
"""Reads one JSON document on stdin and prints what a query names: the netns tests' way to
look into `splicectl ... --json` and crowd.py's results without evaluating code passed
through bash (lib.sh json_get).

Queries:
  PATH                 the value at PATH: keys and list indexes joined by dots
                       (resilient.failovers, queues.0.number, . for the whole document);
                       PATH?DEFAULT gives DEFAULT (parsed as JSON, else as text) when a
                       key is missing or null
  sum PATH             the sum of the numbers PATH names; * stands for every element of a
                       list (queues.*.packets), a missing or null one counts 0
  len PATH             the number of elements
  sorted PATH          the values, sorted (a JSON list)
  pick KEY...          an object with only these keys of the document
  pairs PATH K1 K2     [[K1, K2] of each element of the list at PATH]
  lines PATH           the strings of a list, one per line
  first PATH...        the first of the PATHs that is present and not null
  mib PATH             a byte count in MiB (rounded down)
  is-list PATH         True or False
  where PATH KEY VALUE the first element of the list at PATH whose KEY is VALUE (as text)
  count-in PATH KEY VALUES  how many elements of the list at PATH have KEY among the
                       comma-separated VALUES (compared as text)
Scalars print as Python prints them (True, 3, None); objects and lists as JSON. A path
that does not exist is an error (exit 1), unless a default is given.
"""
import json
import sys


class Missing(Exception):
    pass


def walk(doc, path):
    """All values at path (a list: * fans out)."""
    if path in ('', '.'):
        return [doc]
    values = [doc]
    for part in path.split('.'):
        nxt = []
        for v in values:
            if part == '*':
                if not isinstance(v, list):
                    raise Missing(f"{path}: '*' over a {type(v).__name__}")
                nxt.extend(v)
            elif isinstance(v, dict):
                if part not in v:
                    raise Missing(f"{path}: no key '{part}'")
                nxt.append(v[part])
            elif isinstance(v, list) and part.lstrip('-').isdigit():
                i = int(part)
                if not -len(v) <= i < len(v):
                    raise Missing(f"{path}: no element {i}")
                nxt.append(v[i])
            else:
                raise Missing(f"{path}: cannot take '{part}' of a {type(v).__name__}")
        values = nxt
    return values


def one(doc, path):
    if '?' in path:
        path, default = path.split('?', 1)
        try:
            v = walk(doc, path)[0]
        except Missing:
            v = None
        if v is None:
            try:
                return json.loads(default)
            except ValueError:
                return default
        return v
    values = walk(doc, path)
    return values[0] if '*' not in path.split('.') else values


def show(v):
    print(json.dumps(v) if isinstance(v, (dict, list)) else v)


def main(argv):
    if len(argv) < 2:
        sys.exit("usage: jsonq.py QUERY [ARG...] < document.json")
    doc = json.load(sys.stdin)
    q, args = argv[1], argv[2:]
    try:
        if q == 'sum':
            show(sum(x or 0 for x in walk(doc, args[0])))
        elif q == 'len':
            show(len(one(doc, args[0])))
        elif q == 'sorted':
            show(sorted(one(doc, args[0])))
        elif q == 'pick':
            show({k: doc[k] for k in args})
        elif q == 'pairs':
            show([[e.get(args[1]), e.get(args[2])] for e in one(doc, args[0])])
        elif q == 'lines':
            print('\n'.join(one(doc, args[0])))
        elif q == 'first':
            for p in args:
                try:
                    v = one(doc, p)
                except Missing:
                    continue
                if v is not None:
                    show(v)
                    break
            else:
                show(None)
        elif q == 'mib':
            show(int(one(doc, args[0])) >> 20)
        elif q == 'is-list':
            show(isinstance(one(doc, args[0]), list))
        elif q == 'where':
            show(next((e for e in one(doc, args[0]) if str(e.get(args[1])) == args[2]), None))
        elif q == 'count-in':
            wanted = set(args[2].split(','))
            show(sum(1 for e in one(doc, args[0]) if str(e.get(args[1])) in wanted))
        else:
            if args:
                sys.exit(f"jsonq.py: a path takes no arguments: {q} {' '.join(args)}")
            show(one(doc, q))
    except Missing as e:
        sys.exit(f"jsonq.py: {e}")
    except (KeyError, IndexError, TypeError) as e:
        sys.exit(f"jsonq.py: {q} {' '.join(args)}: {e!r}")


if __name__ == '__main__':
    main(sys.argv)
