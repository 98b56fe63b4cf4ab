"""Sizes a reader can hold: fails on a src/ file over 500 lines, a src/ function over 60 lines, or
a tests/ file over 600 lines, one line per offender (the limits of issue 25 and STYLE.md).

A long file or function is where a newcomer reads the same idea in several places; the limits
keep that visible in CI instead of in review. Known offenders are listed, one `path` or
`path:function` a line, in scripts/lint/sizes-allow.txt (`#` starts a comment; say why a file
is exempt, e.g. a declarative clap or serde file). A listed offender is still reported, marked
"allowed", so the list shows what is left to do; a listed entry that is no longer over its limit
is reported as stale, so the list only shrinks. A function is every `fn` with a body, from its
`fn` line to its closing brace: the code is rustfmt-formatted, so that brace is the first line
after the signature holding only `}` at the `fn` line's indent.

    python3 scripts/lint/sizes.py            # from the repository root: src/ and tests/
    python3 scripts/lint/sizes.py ROOT       # another checkout
"""

import re
import sys
from pathlib import Path

SRC_FILE_LIMIT = 500
SRC_FN_LIMIT = 60
TEST_FILE_LIMIT = 600
ALLOW_LIST = Path(__file__).with_name("sizes-allow.txt")

FN = re.compile(
    r"^(?P<indent>\s*)(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?"
    r"(?:extern\s+\"[^\"]*\"\s+)?fn\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
)


def functions(lines: list[str]):
    """(name, first line number, line count) of every function with a body."""
    for start, line in enumerate(lines):
        match = FN.match(line)
        if not match:
            continue
        indent = match["indent"]
        # The signature ends at the first line ending in `{` (a body) or `;` (a declaration).
        end_of_signature = start
        while end_of_signature < len(lines):
            tail = lines[end_of_signature].split("//")[0].rstrip()
            if tail.endswith("{") or tail.endswith(";") or tail.endswith("}"):
                break
            end_of_signature += 1
        else:
            continue
        tail = lines[end_of_signature].split("//")[0].rstrip()
        if tail.endswith(";"):
            continue
        if tail.endswith("}"):
            yield match["name"], start + 1, end_of_signature - start + 1
            continue
        closing = indent + "}"
        for end in range(end_of_signature + 1, len(lines)):
            if lines[end].rstrip() == closing:
                yield match["name"], start + 1, end - start + 1
                break


def offenders(root: Path):
    """(key, message) of everything over its limit; key is what the allow-list names."""
    for file in sorted((root / "src").rglob("*.rs")):
        rel = file.relative_to(root).as_posix()
        lines = file.read_text(encoding="utf-8").splitlines()
        if len(lines) > SRC_FILE_LIMIT:
            yield rel, f"{rel}: {len(lines)} lines (src files: at most {SRC_FILE_LIMIT})"
        for name, line, count in functions(lines):
            if count > SRC_FN_LIMIT:
                yield (
                    f"{rel}:{name}",
                    f"{rel}:{line}: fn {name} is {count} lines (functions: at most {SRC_FN_LIMIT})",
                )
    for file in sorted((root / "tests").rglob("*.rs")):
        rel = file.relative_to(root).as_posix()
        count = len(file.read_text(encoding="utf-8").splitlines())
        if count > TEST_FILE_LIMIT:
            yield rel, f"{rel}: {count} lines (tests files: at most {TEST_FILE_LIMIT})"


def allowed(path: Path) -> set[str]:
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        key = line.split("#")[0].strip()
        if key:
            keys.add(key)
    return keys


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    allow = allowed(ALLOW_LIST)
    found = list(offenders(root))
    new = [message for key, message in found if key not in allow]
    for key, message in found:
        if key in allow:
            print(f"allowed: {message}")
    for key in sorted(allow - {key for key, _ in found}):
        print(
            f"stale: {key} is listed in {ALLOW_LIST.name} but no longer over its limit: remove it"
        )
    for message in new:
        print(f"too long: {message}")
    if new:
        print(
            f"{len(new)} new offender(s): split them into named steps or files "
            f"(or, for a declarative file, list it in scripts/lint/{ALLOW_LIST.name} with why)"
        )
        return 1
    print(f"sizes ok: {len(found)} listed offender(s) left in {ALLOW_LIST.name}, no new one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
