"""The house rules that keep Arena's layers apart, checked on the source (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

ARENA = Path(__file__).resolve().parents[1] / "arena"
TASK_NAMES = {"spec", "task", "t", "s", "self"}  # names a task or its spec goes by in this code base


def _modules() -> dict[str, Path]:
    out = {}
    for p in ARENA.rglob("*.py"):
        name = ".".join(p.relative_to(ARENA.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _runtime_nodes(tree: ast.Module):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never imported at run time)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    return [n for n in ast.walk(tree) if id(n) not in skip]


def import_graph() -> nx.DiGraph:
    """Module → module it imports, within arena/, counting imports inside functions too (a lazy import is
    still a dependency) but not TYPE_CHECKING-only ones."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    g = nx.DiGraph()
    for mod, path in mods.items():
        g.add_node(mod)
        for n in _runtime_nodes(ast.parse(path.read_text())):
            targets = []
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("arena"):
                targets = [resolve(f"{n.module}.{a.name}") for a in n.names]
            elif isinstance(n, ast.Import):
                targets = [resolve(a.name) for a in n.names if a.name.startswith("arena")]
            for t in targets:
                if t and t != mod and not mod.startswith(t + "."):  # a package's own __init__ is no cycle
                    g.add_edge(mod, t)
    return g


def test_no_import_cycles():
    cycles = sorted(nx.simple_cycles(import_graph()), key=len)
    assert not cycles, "import cycles (break them: move the shared piece down a layer): " + \
        "; ".join(" → ".join([*c, c[0]]) for c in cycles[:10])


def test_the_pure_core_imports_no_edges():
    """metrics, ranking and the task spec import no Flask, SQLAlchemy or docker, at any depth."""
    forbidden = ("flask", "sqlalchemy", "docker", "rq", "redis")
    mods = _modules()
    for core in ("arena.metrics", "arena.leaderboard.ranking", "arena.leaderboard.statistics", "arena.tasks.spec",
                 "arena.kinds"):
        for mod in [m for m in mods if m == core or m.startswith(core + ".")]:
            tree = ast.parse(mods[mod].read_text())
            for n in _runtime_nodes(tree):
                names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                    [n.module or ""] if isinstance(n, ast.ImportFrom) else []
                bad = [x for x in names if x.split(".")[0] in forbidden]
                assert not bad, f"{mod} imports {bad}"


def test_no_branching_on_the_task_kind_outside_the_registry():
    """Nothing outside arena/kinds compares a task's kind or modality: it asks kind_for(spec)."""
    found = []
    for mod, path in _modules().items():
        if mod == "arena.kinds" or mod.startswith("arena.kinds."):
            continue
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Compare):
                for side in (n.left, *n.comparators):
                    if isinstance(side, ast.Attribute) and side.attr in ("kind", "modality") and \
                            isinstance(side.value, ast.Name) and side.value.id in TASK_NAMES:
                        found.append(f"{path.relative_to(ARENA.parent)}:{n.lineno}: {ast.unparse(n)}")
            if isinstance(n, ast.Attribute) and n.attr == "is_tile_task":
                found.append(f"{path.relative_to(ARENA.parent)}:{n.lineno}: {ast.unparse(n)}")
    assert not found, "branches on the task kind (ask arena.kinds.kind_for(spec) instead):\n" + "\n".join(found)


def test_the_web_process_does_not_import_docker(settings):
    """The web process serves every page without the docker SDK (the runner is the worker's)."""
    code = r"""
import sys
from arena.config import load_settings
from arena.web import create_app
app = create_app(load_settings())
c = app.test_client()
for path in ("/", "/tasks", "/signin", "/signup", "/api/v1/tasks", "/api/v1/openapi.json"):
    c.get(path)
import arena.web.api, arena.web.pages, arena.web.manage, arena.web.account, arena.web.export
print(sorted(m for m in sys.modules if m == "docker" or m.startswith("docker.")
             or m.startswith("arena.runner.sandbox") or m.startswith("arena.images")))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout[-500:]


def test_every_server_setting_is_read_in_the_settings_module():
    """ARENA_* variables are read only in arena/config.py (the CLI client's own four aside), and the settings
    table in docs/settings.md is the module's."""
    import re

    client_side = {"ARENA_SERVER", "ARENA_TOKEN", "ARENA_CONFIG", "ARENA_USER"}
    # `arena worker --gpu 0` pins its own process by setting ARENA_GPU_DEVICES, which load_settings() reads
    allowed = {("arena.runner.worker", "ARENA_GPU_DEVICES")}
    config = (ARENA / "config.py").read_text()
    read_there = set(re.findall(r'env(?:\.get)?\(?\[?"(ARENA_[A-Z_]+)"', config))
    for mod, path in _modules().items():
        if mod == "arena.config":
            continue
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and re.fullmatch(r"ARENA_[A-Z_]+", n.value):
                ok = n.value in client_side or (mod, n.value) in allowed
                assert ok, f"{mod} names {n.value}: read it in arena/config.py"
    documented = set(re.findall(r"^\| (ARENA_[A-Z_]+) \|", config, re.M))
    assert read_there <= documented, read_there - documented
    docs = (ARENA.parent / "docs" / "settings.md").read_text()
    table = [ln for ln in config.split('"""')[1].splitlines() if ln.startswith("|")]
    assert all(ln in docs.splitlines() for ln in table), "docs/settings.md differs from arena/config.py's table"


def test_the_project_cites_only_its_own_files():
    """Every ``*.md`` document that code, READMEs, docs or Dockerfiles name is a file of the repository (the
    contract, the metric conventions and the sandbox facts live in docs/, not in notes kept elsewhere)."""
    import re

    files = subprocess.run(["git", "ls-files"], cwd=ARENA.parent, capture_output=True, text=True).stdout.split()
    ours = {Path(f).name for f in files if f.endswith(".md")}
    missing = []
    for f in files:
        path = ARENA.parent / f
        if not (path.is_file() and f.endswith((".py", ".md", ".yaml", "Dockerfile"))):
            continue
        for name in re.findall(r"[A-Za-z0-9_./-]+\.md\b", path.read_text(errors="replace")):
            if Path(name).name not in ours:
                missing.append(f"{f}: {name}")
    assert not missing, "these name documents the repository does not have:\n" + "\n".join(missing)
