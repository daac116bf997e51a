#!/usr/bin/env python3
"""Generates docs/configuration.md, the reference of every key of the chart's values.yaml.

Each key's description is its `# --` comment (helm-docs style: the `# --` line and the comment
lines after it, directly above the key), else the comment block directly above it. Every leaf key
(a scalar, a list or an empty map) gets a row with its default; a documented map gets a row too,
and its keys need no description of their own.

  scripts/values-reference.py            # prints the Markdown
  scripts/values-reference.py --write    # writes docs/configuration.md
  scripts/values-reference.py --check    # exits 1 (with a diff) when docs/configuration.md is
                                         # stale or a leaf key has no description
"""
import difflib
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "charts/webhook-operator/values.yaml"
DOC = ROOT / "docs/configuration.md"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?P<rest>.*)$")

HEADER = """\
# Chart configuration

Every value of the Helm chart `charts/webhook-operator`, its default and what it does. Generated
from the comments in `charts/webhook-operator/values.yaml` by `scripts/values-reference.py --write`
(`scripts/check-chart.sh` fails when this file is stale). `values.schema.json` rejects unknown keys
and out-of-range values. Operating the chart (metrics, alerts, backups, upgrades):
[operations.md](operations.md).

Set values with `--set key=value` or `-f my-values.yaml`, e.g.

```sh
helm install webhook-operator charts/webhook-operator -n webhook-operator-system --create-namespace \\
  --set image.repository=registry.example.com/platform/webhook-operator
```

| key | default | description |
| --- | --- | --- |
"""


def descriptions(lines):
    """Maps each key's dotted path to its description (None when it has no comment)."""
    out, stack, block = {}, [], []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip() if stripped != "#" else "")
            continue
        m = KEY.match(line)
        if not m:
            block = []  # a blank line or a list item ends the comment block
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [m["key"]])
        stack.append((indent, m["key"]))
        marked = [i for i, text in enumerate(block) if text.startswith("--")]
        if marked:
            text = block[marked[-1]:]
            text[0] = text[0][2:].strip()
        else:
            text = block
        out[path] = " ".join(t for t in text if t) or None
        block = []
    return out


def rows(values, docs, prefix="", covered=False):
    """Yields (path, default, description, covered): `covered` when a map above is documented."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            if docs.get(path):
                yield path, None, docs[path], covered
            yield from rows(value, docs, path + ".", covered or bool(docs.get(path)))
        else:
            yield path, value, docs.get(path), covered


def cell(text):
    return text.replace("|", "\\|")


def default(value):
    if value is None:
        return "`null`"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    return f"`{json.dumps(value, separators=(', ', ': '))}`"


def render():
    text = VALUES.read_text()
    values = yaml.safe_load(text)
    docs = descriptions(text.splitlines())
    table, missing = [], []
    for path, value, doc, covered in rows(values, docs):
        shown = "(map)" if isinstance(lookup(values, path), dict) and value is None else default(value)
        if not doc and not covered:
            missing.append(path)
        table.append(f"| `{path}` | {cell(shown)} | {cell(doc or '')} |")
    return HEADER + "\n".join(table) + "\n", missing


def lookup(values, path):
    for part in path.split("."):
        values = values[part]
    return values


def main(argv):
    doc, missing = render()
    mode = argv[1] if len(argv) > 1 else ""
    if mode == "--write":
        DOC.write_text(doc)
    elif mode == "--check":
        ok = True
        if missing:
            print("values.yaml keys without a description (add a `# --` comment above each):",
                  *missing, sep="\n  ", file=sys.stderr)
            ok = False
        current = DOC.read_text() if DOC.exists() else ""
        if current != doc:
            sys.stderr.writelines(difflib.unified_diff(
                current.splitlines(True), doc.splitlines(True),
                "docs/configuration.md", "generated from values.yaml"))
            print("docs/configuration.md is stale: run scripts/values-reference.py --write",
                  file=sys.stderr)
            ok = False
        return 0 if ok else 1
    elif mode:
        print(__doc__, file=sys.stderr)
        return 2
    else:
        sys.stdout.write(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
