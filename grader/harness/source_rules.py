"""TRUSTED side: the from-scratch rule read from the submission's source, never run.

The worker's runtime monitor (``grader.worker.forbidden``) sees what actually
runs, but it lives in the student's interpreter: the module can switch it off
(``torch._C.DisableTorchFunction``), hide from it (code compiled under another
file name) or rewrite its report. So the harness also reads the source itself,
with ``ast`` (parsing runs no code), for two kinds of finding:

- **forbidden**: a library version of what the assignment asks students to
  write (``nn.LSTM``, ``torch.lstm_cell``, ``F.embedding``, ...), named in the
  code, however it was imported;
- **evasion**: code that reaches around the grader or hides what it calls
  (the grader's own modules, ``exec``/``eval``/``compile``, ``ctypes``, frame
  and garbage-collector walking, ``sys.modules``, torch's function-override
  switches, attribute names built at run time on torch).

Evasion, and a forbidden name the monitor did not see run, mark the submission
for an instructor's review: the rule's points are withheld until then. A
forbidden use the monitor saw fails the rule outright.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

#: Larger sources are not parsed (a real module is some 30 KB): the size alone is reviewed.
MAX_SOURCE_BYTES = 2_000_000

#: Last components of torch names that implement what students must write themselves.
FORBIDDEN = {
    "RNN": "nn.RNN", "LSTM": "nn.LSTM", "GRU": "nn.GRU", "RNNBase": "nn.RNNBase",
    "RNNCell": "nn.RNNCell", "LSTMCell": "nn.LSTMCell", "GRUCell": "nn.GRUCell",
    "RNNCellBase": "nn.RNNCellBase", "MultiheadAttention": "nn.MultiheadAttention",
    "Embedding": "nn.Embedding", "EmbeddingBag": "nn.EmbeddingBag",
    "embedding": "F.embedding", "embedding_bag": "F.embedding_bag",
    "rnn_tanh": "torch.rnn_tanh", "rnn_relu": "torch.rnn_relu",
    "rnn_tanh_cell": "torch.rnn_tanh_cell", "rnn_relu_cell": "torch.rnn_relu_cell",
    "lstm": "torch.lstm", "lstm_cell": "torch.lstm_cell", "gru": "torch.gru",
    "gru_cell": "torch.gru_cell", "_thnn_fused_lstm_cell": "torch._thnn_fused_lstm_cell",
    "_thnn_fused_gru_cell": "torch._thnn_fused_gru_cell",
    "scaled_dot_product_attention": "F.scaled_dot_product_attention",
    "multi_head_attention_forward": "F.multi_head_attention_forward",
    "_native_multi_head_attention": "torch._native_multi_head_attention",
}

#: Modules whose import alone reaches around the grader.
EVASIVE_MODULES = {
    "grader": "imports the grader's own modules", "capgrade": "imports the grader's own modules",
    "ctypes": "ctypes (calls C directly)", "cffi": "cffi (calls C directly)",
    "importlib": "importlib (imports by computed name)", "builtins": "the builtins module",
    "inspect": "inspect (walks frames)", "marshal": "marshal (code objects)",
    "pickle": "pickle", "dill": "dill", "cloudpickle": "cloudpickle",
    "torch._C": "torch's C internals", "torch._VF": "torch's C internals (_VF)",
    "torch.overrides": "torch's function-override machinery",
    "torch.utils.cpp_extension": "compiled extensions", "subprocess": "subprocess",
    "multiprocessing": "multiprocessing", "threading": "threads", "signal": "signals",
    "sys": None,  # only some uses of sys are evasive: see EVASIVE_ATTRIBUTES
    "os": None,
}

#: Builtins that run or build code from strings, or reach the interpreter's tables.
EVASIVE_CALLS = {
    "exec": "exec", "eval": "eval", "compile": "compile", "__import__": "__import__",
    "globals": "globals()", "vars": "vars()", "breakpoint": "breakpoint()",
}

#: Attribute names that reach frames, code, the import table or torch's override switches.
EVASIVE_ATTRIBUTES = {
    "modules": "sys.modules", "_getframe": "sys._getframe", "settrace": "settrace",
    "setprofile": "setprofile", "addaudithook": "sys.addaudithook",
    "__code__": "a function's __code__", "__globals__": "a function's __globals__",
    "__builtins__": "__builtins__", "f_globals": "a frame's globals",
    "f_locals": "a frame's locals", "f_back": "frame walking", "gi_frame": "frame walking",
    "__subclasses__": "__subclasses__ (finds any class)", "__dict__": None,
    "__self__": "a builtin's __self__ (the builtins module)",
    "__class__": None, "__bases__": "__bases__ (walks classes)", "__mro__": "__mro__",
    "DisableTorchFunction": "torch._C.DisableTorchFunction",
    "DisableTorchFunctionSubclass": "torch._C.DisableTorchFunctionSubclass",
    "_disabled_torch_function_impl": "torch's function-override switch",
    "_pop_torch_function_stack": "torch's function-override stack",
    "_push_on_torch_function_stack": "torch's function-override stack",
    "_set_torch_function_mode": "torch's function-override stack",
    "_C": "torch's C internals (torch._C)", "_VF": "torch's C internals (torch._VF)",
    "ops": None, "system": None, "popen": None, "fork": None, "kill": None,
    "get_objects": None, "get_referrers": None, "get_referents": None,
    "FunctionType": None, "CodeType": None, "LambdaType": None, "ModuleType": None,
    "load_library": "torch.ops.load_library",
}

#: Attribute names evasive only on a module that the student did not write.
_ON_MODULES = {"ops": {"torch"}, "system": {"os"}, "popen": {"os"}, "fork": {"os"},
               "kill": {"os"}, "get_objects": {"gc"}, "get_referrers": {"gc"},
               "get_referents": {"gc"}, "FunctionType": {"types"}, "CodeType": {"types"},
               "LambdaType": {"types"}, "ModuleType": {"types"}}


@dataclass(frozen=True)
class Finding:
    what: str
    line: int
    function: str

    def describe(self) -> str:
        return f"{self.what} (line {self.line}, in {self.function})"


@dataclass
class SourceFindings:
    """What reading the source found; ``unreadable`` when it could not be read at all."""

    forbidden: list[Finding] = field(default_factory=list)
    evasion: list[Finding] = field(default_factory=list)
    unreadable: str = ""

    @property
    def needs_review(self) -> bool:
        return bool(self.evasion or self.unreadable)


def scan(path: str | Path) -> SourceFindings:
    """The forbidden names and evasions in the module at ``path`` (read, parsed, never run)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_SOURCE_BYTES:
            return SourceFindings(unreadable=f"the module is {size:,} bytes: too large to read "
                                             "(a real solution is some 30 KB)")
        tree = ast.parse(path.read_bytes(), filename=path.name)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return SourceFindings(unreadable=f"the module could not be parsed "
                                         f"({type(exc).__name__})")
    reader = _Reader()
    try:
        reader.visit(tree)
    except RecursionError:
        return SourceFindings(unreadable="the module is nested too deeply to read")
    return reader.found


class _Reader(ast.NodeVisitor):
    """Resolves import aliases to dotted names and records what it finds, by function."""

    def __init__(self) -> None:
        self.found = SourceFindings()
        self.aliases: dict[str, str] = {}  # local name -> dotted module path it stands for
        self.scope: list[str] = []

    # -- where we are -------------------------------------------------------------------

    def _where(self) -> str:
        return ".".join(self.scope) or "module level"

    def _add(self, kind: str, what: str, node: ast.AST) -> None:
        finding = Finding(what, getattr(node, "lineno", 0), self._where())
        bucket = self.found.forbidden if kind == "forbidden" else self.found.evasion
        if finding not in bucket:
            bucket.append(finding)

    def _scoped(self, node: ast.AST, name: str) -> None:
        self.scope.append(name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node, node.name)

    # -- imports ------------------------------------------------------------------------

    def _module(self, dotted: str, node: ast.AST) -> None:
        for prefix in _prefixes(dotted):
            if EVASIVE_MODULES.get(prefix):
                self._add("evasion", f"imports {dotted}: {EVASIVE_MODULES[prefix]}", node)
                return

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._module(alias.name, node)
            local = alias.asname or alias.name.split(".")[0]
            self.aliases[local] = alias.name if alias.asname else alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = ("." * node.level) + (node.module or "")
        if node.level:
            self._add("evasion", f"a relative import (from {base} import ...)", node)
        self._module(base, node)
        for alias in node.names:
            dotted = f"{base}.{alias.name}" if base else alias.name
            self._module(dotted, node)
            self._name(dotted, node)
            self.aliases[alias.asname or alias.name] = dotted

    # -- names --------------------------------------------------------------------------

    def _dotted(self, node: ast.AST) -> str | None:
        """``nn.functional.embedding`` as the full dotted name it resolves to, if it can."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        root = self.aliases.get(node.id, node.id)
        return ".".join([root, *reversed(parts)])

    def _name(self, dotted: str, node: ast.AST) -> None:
        parts = dotted.split(".")
        if parts[0] == "torch" and len(parts) > 1 and parts[-1] in FORBIDDEN:
            self._add("forbidden", FORBIDDEN[parts[-1]], node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = self._dotted(node)
        if dotted is not None:
            self._name(dotted, node)
        base = self._dotted(node.value)
        root = base.split(".")[0] if base else ""
        what = EVASIVE_ATTRIBUTES.get(node.attr, "")
        if node.attr in _ON_MODULES:
            if root in _ON_MODULES[node.attr]:
                self._add("evasion", f"{base}.{node.attr}", node)
        elif node.attr == "__dict__":
            if root in ("torch", "sys", "builtins", "os", "grader"):
                self._add("evasion", f"{base}.__dict__ (attributes looked up by string)", node)
        elif what and not (node.attr == "modules" and root != "sys"):
            if node.attr in ("_C", "_VF") and root != "torch":
                pass
            else:
                self._add("evasion", what, node)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        """``_T = torch`` (or ``_T, _F = torch, F``): the new name stands for the module."""
        pairs: list[tuple[ast.AST, ast.AST]] = []
        for target in node.targets:
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) \
                    and len(target.elts) == len(node.value.elts):
                pairs += list(zip(target.elts, node.value.elts, strict=True))
            else:
                pairs.append((target, node.value))
        for name, value in pairs:
            dotted = self._dotted(value)
            if isinstance(name, ast.Name) and dotted is not None and \
                    dotted.split(".")[0] in _LIBRARIES and "." not in name.id:
                self.aliases[name.id] = dotted
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        dotted = self.aliases.get(node.id)
        if dotted is not None:
            self._name(dotted, node)
        if node.id in ("__builtins__", "__loader__", "__spec__"):
            self._add("evasion", node.id, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in EVASIVE_CALLS \
                and func.id not in self.aliases:
            self._add("evasion", f"{EVASIVE_CALLS[func.id]} (runs or finds code by name)", node)
        if isinstance(func, ast.Name) and func.id in ("getattr", "setattr", "delattr",
                                                       "hasattr") and len(node.args) >= 2:
            target = self._dotted(node.args[0])
            name = node.args[1]
            on_library = target is not None and target.split(".")[0] in _LIBRARIES
            plain_object = isinstance(node.args[0], ast.Name) and node.args[0].id in (
                "self", "cls", "module", "model", "m", "layer")
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                if target is not None:
                    self._name(f"{target}.{name.value}", node)
                if EVASIVE_ATTRIBUTES.get(name.value):
                    self._add("evasion", f"{func.id}(..., {name.value!r})", node)
            elif on_library or not plain_object:
                self._add("evasion", f"{func.id}({target or 'an object'}, <a name computed at "
                          "run time>)", node)
            if func.id != "getattr" and on_library:
                self._add("evasion", f"{func.id} on {target} (changes a library)", node)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and node.value.startswith(("grader.", "capgrade")):
            self._add("evasion", f"names the grader's module {node.value[:60]!r}", node)


#: Roots of dotted names that are libraries (not the student's own objects).
_LIBRARIES = ("torch", "sys", "builtins", "os", "grader", "capgrade", "gc", "inspect",
              "importlib", "ctypes", "types")


def _prefixes(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
