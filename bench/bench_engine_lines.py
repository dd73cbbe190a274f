"""Non-blank lines of stage one's engine, module by module, against its budget of 2,600 lines.

  python bench/bench_engine_lines.py            # the table
  python bench/bench_engine_lines.py --base REV  # beside the same modules at a git revision
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import tools._venv  # noqa: E402,F401  (the project venv, as every tool and benchmark)
ENGINE = ("pseudolabel/cam", "pseudolabel/sam", "pseudolabel/ablation", "pseudolabel/pipeline.py",
          "pseudolabel/generate.py", "pseudolabel/config.py", "pseudolabel/canvas.py", "pseudolabel/transfer.py",
          "pseudolabel/precision.py", "pseudolabel/loc_maps.py", "pseudolabel/model_pool.py")
BUDGET = 2600


def engine_files(rev: str | None) -> list[str]:
    """The engine's Python files in the work tree, or at ``rev``."""
    if rev is None:
        return sorted(str(p.relative_to(ROOT)) for part in ENGINE for p in
                      ((ROOT / part).rglob("*.py") if (ROOT / part).is_dir() else [ROOT / part]) if p.exists())
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev, "--", *ENGINE],
                            check=True, capture_output=True, text=True).stdout.split()
    return sorted(f for f in listed if f.endswith(".py"))


def non_blank(path: str, rev: str | None) -> int:
    """Non-blank lines of ``path`` in the work tree or at ``rev``."""
    text = (ROOT / path).read_text() if rev is None else subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True, capture_output=True, text=True).stdout
    return sum(1 for line in text.splitlines() if line.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="a git revision to compare with")
    args = parser.parse_args()
    now = {f: non_blank(f, None) for f in engine_files(None)}
    base = {f: non_blank(f, args.base) for f in engine_files(args.base)} if args.base else {}
    print(f"{'module':44s} {'lines':>6s}" + (f" {args.base[:10]:>10s}" if base else ""))
    for f in sorted(set(now) | set(base)):
        print(f"{f:44s} {now.get(f, 0):6d}" + (f" {base.get(f, 0):10d}" if base else ""))
    print(f"{'total (budget ' + str(BUDGET) + ')':44s} {sum(now.values()):6d}"
          + (f" {sum(base.values()):10d}" if base else ""))


if __name__ == "__main__":
    main()
