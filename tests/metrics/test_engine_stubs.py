"""The type stubs `_rust_metrics.pyi` describe exactly what the compiled engine exports."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from trainmap import _rust_metrics

STUB = Path(_rust_metrics.__file__).with_name("_rust_metrics.pyi")


def stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text())


def test_every_export_is_stubbed_and_every_stub_exported():
    stubbed = set()
    for node in stub_tree().body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            stubbed.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            stubbed.add(node.target.id)
    exported = {name for name in dir(_rust_metrics) if not name.startswith("_")}
    assert stubbed == exported


def test_function_signatures_match():
    for node in stub_tree().body:
        if not isinstance(node, ast.FunctionDef):
            continue
        actual = inspect.signature(getattr(_rust_metrics, node.name))
        args = node.args
        stub_params = [(a.arg, "POSITIONAL_OR_KEYWORD") for a in args.posonlyargs + args.args]
        stub_params += [(a.arg, "KEYWORD_ONLY") for a in args.kwonlyargs]
        assert [(p.name, p.kind.name) for p in actual.parameters.values()] == stub_params, node.name
        stub_defaults = [ast.literal_eval(d) for d in args.defaults] + [
            ast.literal_eval(d) for d in args.kw_defaults if d is not None
        ]
        actual_defaults = [p.default for p in actual.parameters.values() if p.default is not inspect.Parameter.empty]
        assert actual_defaults == stub_defaults, node.name


def test_class_attributes_match():
    stats = next(n for n in stub_tree().body if isinstance(n, ast.ClassDef) and n.name == "CheckpointStats")
    properties = {n.name for n in stats.body if isinstance(n, ast.FunctionDef)}
    assert properties == {name for name in dir(_rust_metrics.CheckpointStats) if not name.startswith("_")}
    assert issubclass(_rust_metrics.CheckpointError, ValueError)
