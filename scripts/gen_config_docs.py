"""Regenerate docs/config.md from the config classes (`--check`: exit 1 when it is stale)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedser_shared.config_doc import config_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="do not write; fail when docs/config.md differs")
    args = parser.parse_args()
    text = config_markdown()
    if args.check:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC} is stale: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
