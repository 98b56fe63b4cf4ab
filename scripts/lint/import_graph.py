"""The module graph of src/: fails when modules import each other in a circle.

Each file is a node (src/worker/task.rs is `worker::task`, a folder's mod.rs is the folder). An
edge is any `crate::…` or `super::…` path in the file's code (comments and doc comments skipped),
resolved to the longest module it names. A module's use of its own submodules (a folder's mod.rs
declaring and re-exporting them) is not an edge back, so a folder may re-export what it holds.
"""

import re
import sys
from pathlib import Path

PATH = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)")


def module_of(src: Path, file: Path) -> tuple[str, ...]:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def code_lines(text: str):
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            continue
        yield line.split("//")[0]


def main() -> int:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    files = [f for f in src.rglob("*.rs") if f.name != "main.rs"]
    modules = {module_of(src, f) for f in files}
    edges: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in modules}
    for file in files:
        here = module_of(src, file)
        is_folder = file.name == "mod.rs"
        for line in code_lines(file.read_text()):
            for root, rest in PATH.findall(line):
                names = tuple(rest.strip(":").split("::"))
                if root == "crate":
                    base: tuple[str, ...] = ()
                else:
                    base = here if is_folder else here[:-1]
                    base = base[:-1] if is_folder else base
                target = base + names
                while target and target not in modules:
                    target = target[:-1]
                if not target or target == here or target[: len(here)] == here:
                    continue
                if here[: len(target)] == target:
                    # A submodule using its parent's re-exports or items: the parent is its room.
                    continue
                edges[here].add(target)
    # Cycles: depth-first search with colours.
    state: dict[tuple[str, ...], int] = {}
    stack: list[tuple[str, ...]] = []
    cycles: list[list[str]] = []

    def visit(node: tuple[str, ...]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                cycles.append(["::".join(m) or "crate" for m in cycle])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    for cycle in cycles:
        print("import circle: " + " -> ".join(cycle))
    count = sum(len(t) for t in edges.values())
    if not cycles:
        print(f"no import circle among {len(modules)} modules ({count} edges)")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
