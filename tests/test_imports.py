"""No import cycle anywhere in the runtime or the operator. Every import counts, those inside
functions and under TYPE_CHECKING too: a cycle dodged that way is still a cycle. (The layers
themselves are contracts in pyproject.toml, checked by `lint-imports`.)"""

from __future__ import annotations

import grimp


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("ergon", "ergon_operator", cache_dir=None)
    cycles: list[str] = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append(" -> ".join((module, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
