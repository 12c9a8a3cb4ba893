"""The public API documents itself (issue 20): every public name has a docstring, every parameter that carries a
physical quantity states its unit, and every array of atoms states its shape.

The public API is the `__all__` of `so3krates_lab` and of its modules `PUBLIC_MODULES`; a module of the package
listed in one of them (`so3krates_lab.data.builtin`, `so3krates_lab.distributed`) is public too, with its own
`__all__` or, without one, the functions and classes it defines. Checked:

- public modules, functions, classes and the public methods / properties defined on a public class in this
  package (inherited members from outside the package, dunder methods and flax machinery such as `setup` are
  skipped) have a non-empty docstring; a dataclass or NamedTuple's generated ``Name(field, ...)`` text does not
  count;
- constants (numbers, strings, tuples, dicts, type aliases) are documented by a ``#:`` comment at their
  assignment or a string literal right after it (both are what Sphinx autodoc renders), or are named in their
  module's docstring;
- the parameters of functions, methods and class constructors (dataclass / NamedTuple fields included) whose
  whole name matches a pattern of `UNIT_RULES` state one of its units in the docstring, in the same sentence
  (or "name: ..." entry) as the name, unless the name itself ends in a unit (`timestep_fs`); `ALLOW` lists the
  few names the patterns match wrongly;
- parameters named in `SHAPE_NAMES` state their shape, e.g. "(n_atoms, 3)", in the same sentence.

Each check collects every offender and reports them in one assertion message.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest

PACKAGE = "so3krates_lab"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
PUBLIC_MODULES = [PACKAGE] + [f"{PACKAGE}.{m}" for m in (
    "analysis", "data", "graph", "interop", "md", "model", "reference", "train", "widgets", "pretrained", "units",
    "fileio",
    # the modules of the top-level names, which the API reference documents whole too
    "structures", "potential_base", "analytic", "interrupts")]
# modules without an __all__: their public names are the functions and classes they define
NO_ALL = {f"{PACKAGE}.structures"}

# ---------------------------------------------------------------------------------------------------------------
# Units. A unit token is a regular expression, matched as a whole word: not next to a letter, digit, "_" or "/"
# (so "eV/A" is a force and not an energy, "1/fs" a rate and not a time) and not followed by "^", "²" or "³".
LENGTH = ("Å", "[Aa]ngstrom", r"\(A\)", "nm", "[Bb]ohr")
ENERGY = ("eV", "meV", "kcal/mol", "kJ/mol", "[Hh]artree")
FORCE = ("eV/Å", "eV/A", "eV/Angstrom")
TIME = ("fs", "ps")
WALL_TIME = ("s", "seconds?", "minutes?")
TEMPERATURE = ("K(?![,)])", "[Kk]elvin")  # "K" but not a shape "(K,)" / "(S, K)"
MASS = ("amu", "Da", "u")
RATE = ("1/fs", "fs^-1", "/fs", "1/ps", "ps^-1")
FREQUENCY = (r"cm\^-1", "cm-1", "1/cm", "THz")
ANGLE = ("deg", "degrees?", "°", "rad", "radians?")
SPRING = (r"eV/Å\^2", r"eV/A\^2", r"eV/Angstrom\^2", "eV/Å²", "eV/A²")
CHARGE = (r"e(?![.\w])", "elementary charges?")  # "(e)" but not "e.g."

# whole parameter name (re.fullmatch) -> the unit tokens one of which its docstring must state
UNIT_RULES: dict[str, tuple[str, ...]] = {
    r"(reference_|start_)?positions|pairs_of_positions|R|cell|cutoff|long_range_cutoff|skin|reach|r0|r_nn"
    r"|max_step|min_distance|rmsd|rmsd_tol|radius|vacuum_gap|max_bond_deviation|bond_lengths?|amplitude"
    r"|electrostatics_sigma|distances?|displacements?|spacing|width": LENGTH,
    r"energy|energies|model_energies|element_energy|element_energies|energy_tol|e0_per_atom|max_energy_drift"
    r"|barrier|max_barrier|ediff|kinetic|conserved|threshold_energy": ENERGY,
    r"forces|F|(\w+_)?fmax": FORCE,
    r"timestep|dt|dt_max|dt_start|time|times|tau|duration|stop_time|max_lag|skip|sample_every": TIME,
    r"timeout|interval|save_every": WALL_TIME,
    r"temperature|temperatures|T|max_temperature|start_temperature|electronic_temperature": TEMPERATURE,
    r"mass|masses": MASS,
    r"friction|gamma": RATE,
    r"frequency|frequencies|wavenumbers?|min_frequency|max_frequency|min_separation": FREQUENCY,
    r"angle|angles|min_angle|taboo|turned|spread|dihedral": ANGLE,
    r"k_spring": SPRING,
    r"charge|total_charge": CHARGE,
}
# a name that ends in a unit states it: timestep_fs, temperature_K, high_meV, friction_per_fs, max_lag_fs, ...
UNIT_SUFFIX = re.compile(r".*_(fs|ps|s|seconds|K|eV|meV|A|eV_A|amu|cm1|deg|rad|per_fs|per_ps|THz)")

# (qualified callable, parameter) -> why a pattern matches it wrongly: it carries no unit of the pattern's kind
ALLOW: dict[tuple[str, str], str] = {
    ("so3krates_lab.md.minimize.fire", "dt_start"): "FIRE's time step is dimensionless (unit masses, as ASE's)",
    ("so3krates_lab.md.minimize.fire", "dt_max"): "FIRE's time step is dimensionless (unit masses, as ASE's)",
    ("so3krates_lab.md.minimize.FireState", "dt"): "FIRE's time step is dimensionless (unit masses, as ASE's)",
}

# array parameters that must state their shape
SHAPE_NAMES = re.compile(r"(reference_|start_)?positions|velocities|forces|numbers|cell|masses")
# one dimension of a shape: n, N_s, n_atoms, 3, 3N, K', ..., a named axis (time, atom, ...), optionally "- 1"
_DIM = (r"(?:\d*[A-Za-z](?:_\w+)?'?|\d+|\.\.\.|time|atoms?|frames?|modes?|replicas?|pairs?|images?|xyz)"
        r"(?:\s*[*+-]\s*\w+)?")
SHAPE = re.compile(r"[(\[]\s*" + _DIM + r"(?:\s*,\s*" + _DIM + r")*\s*,\s*(?:" + _DIM + r")?\s*[)\]]")

_LEFT, _RIGHT = r"(?<![\w/'’])", r"(?![\w/^²³])"
_UNIT_RE = {pattern: re.compile(_LEFT + "(?:" + "|".join(tokens) + ")" + _RIGHT)
            for pattern, tokens in UNIT_RULES.items()}
_ENTRY = re.compile(r"\s*[A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*\s*:(?:\s|$)")  # "name:" / "a, b:" starts an entry
_BULLET = re.compile(r"\s*[-*]\s")


# ---------------------------------------------------------------------------------------------------------------
# collecting the public API

def _public_objects():
    """(module name, name, object) for every name of the public `__all__` lists, no duplicates. A module of the
    package listed in an `__all__` (e.g. `data.builtin`) is public too: its `__all__`, or without one the
    functions and classes it defines."""
    seen, found = set(), []
    queue, queued = list(PUBLIC_MODULES), set(PUBLIC_MODULES)
    while queue:
        module_name = queue.pop(0)
        module = importlib.import_module(module_name)
        if hasattr(module, "__all__"):
            names = module.__all__
        else:
            assert module_name not in PUBLIC_MODULES or module_name in NO_ALL, f"{module_name} has no __all__"
            names = [k for k, v in vars(module).items() if not k.startswith("_")
                     and (_is_function(v) or inspect.isclass(v)) and v.__module__ == module_name]
        for name in names:
            obj = getattr(module, name)  # the top-level package imports its names lazily (PEP 562)
            key = (_home(obj) or module_name, name)
            if key not in seen:
                seen.add(key)
                found.append((module_name, name, obj))
            if inspect.ismodule(obj) and obj.__name__.startswith(PACKAGE + ".") and obj.__name__ not in queued:
                queue.append(obj.__name__)
                queued.add(obj.__name__)
    return found


def _is_function(obj) -> bool:
    """A function, also one wrapped by a decorator that is not itself a function (functools.cache)."""
    return inspect.isfunction(obj) or (callable(obj) and not inspect.isclass(obj) and hasattr(obj, "__wrapped__"))


def _home(obj):
    if _is_function(obj) or inspect.isclass(obj):
        return obj.__module__
    if inspect.ismodule(obj):
        return obj.__name__
    return None


def _is_flax_module(cls) -> bool:
    return any(k.__module__.startswith("flax.") and k.__name__ == "Module" for k in cls.__mro__)


def _members(cls):
    """(label, function or property) of the public methods / properties defined on `cls` or on its bases in the
    package."""
    for klass in cls.__mro__:
        if not klass.__module__.startswith(PACKAGE):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or (name == "setup" and _is_flax_module(cls)):
                continue
            if isinstance(value, (classmethod, staticmethod)):
                value = value.__func__
            if isinstance(value, property) or inspect.isfunction(value):
                yield f"{klass.__module__}.{klass.__qualname__}.{name}", value


def _api():
    """label -> (kind, object, docstring used for its parameters) for every checked function, class and member."""
    api = {}
    for module_name, name, obj in _public_objects():
        if _is_function(obj):
            api.setdefault(f"{obj.__module__}.{obj.__qualname__}", ("function", obj, inspect.getdoc(obj) or ""))
        elif inspect.isclass(obj):
            label = f"{obj.__module__}.{obj.__qualname__}"
            doc = _own_class_doc(obj) or ""
            init = vars(obj).get("__init__")
            if init is not None and inspect.getdoc(init):
                doc += "\n\n" + inspect.getdoc(init)
            api.setdefault(label, ("class", obj, doc))
            for member_label, member in _members(obj):
                kind = "property" if isinstance(member, property) else "method"
                api.setdefault(member_label, (kind, member, inspect.getdoc(member) or ""))
    return api


def _own_class_doc(cls) -> str | None:
    """The class's own docstring; None for none or for the generated "Name(field, ...)" of a dataclass /
    NamedTuple (inspect.getdoc would instead return a base class's docstring)."""
    doc = cls.__dict__.get("__doc__")
    if not doc or not doc.strip():
        return None
    doc = inspect.cleandoc(doc)
    if re.fullmatch(re.escape(cls.__name__) + r"\(.*\)", doc, flags=re.S) and "\n" not in doc:
        return None
    return doc


def _parameters(kind, obj):
    """The parameter names of a callable or of a class constructor (dataclass / NamedTuple fields included)."""
    if kind == "property":
        return []
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # e.g. an exception class: no Python-level signature
        return []
    skip = {"self", "cls"} | ({"parent", "name"} if inspect.isclass(obj) and _is_flax_module(obj) else set())
    return [p.name for p in signature.parameters.values()
            if p.name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


# ---------------------------------------------------------------------------------------------------------------
# reading docstrings

def _sentences(doc: str) -> list[str]:
    """A docstring cut into sentences: a blank line, a "name:" entry or a bullet starts a new block; a block's
    lines are joined and split after "." or ";" followed by a space."""
    blocks, current = [], []
    for line in doc.splitlines():
        if not line.strip() or _ENTRY.match(line) or _BULLET.match(line):
            if current:
                blocks.append(" ".join(current))
            current = [line.strip()] if line.strip() else []
        else:
            current.append(line.strip())
    if current:
        blocks.append(" ".join(current))
    return [s for block in blocks for s in re.split(r"(?<=[.;])\s+", block) if s]


def _mentions(name: str) -> re.Pattern:
    """`name` as a word: not part of a longer name, an attribute (x.cell) or a compound ("cell-list")."""
    return re.compile(r"(?<![\w.-])" + re.escape(name) + r"(?![\w-])")


def _context(name: str, doc: str) -> list[str]:
    """The sentences of `doc` that name `name`."""
    pattern = _mentions(name)
    return [s for s in _sentences(doc) if pattern.search(s)]


def unit_offences(label: str, params, doc: str) -> list[str]:
    """`label(param): wants one of ...` for each parameter whose name calls for a unit the docstring lacks."""
    offences = []
    for name in params:
        if UNIT_SUFFIX.fullmatch(name) or (label, name) in ALLOW:
            continue
        for pattern, tokens in UNIT_RULES.items():
            if re.fullmatch(pattern, name):
                if not any(_UNIT_RE[pattern].search(s) for s in _context(name, doc)):
                    offences.append(f"{label}({name}): no unit, wants one of {tokens}")
                break
    return offences


def shape_offences(label: str, params, doc: str) -> list[str]:
    return [f"{label}({name}): no shape such as (n_atoms, 3)" for name in params
            if SHAPE_NAMES.fullmatch(name)
            and not any(SHAPE.search(s) for s in _context(name, doc))]


# ---------------------------------------------------------------------------------------------------------------
# the checks

def test_public_modules_and_names_have_docstrings():
    modules = PUBLIC_MODULES + [obj.__name__ for _, _, obj in _public_objects() if inspect.ismodule(obj)]
    missing = [m for m in dict.fromkeys(modules) if not (importlib.import_module(m).__doc__ or "").strip()]
    for label, (kind, obj, _) in sorted(_api().items()):
        doc = _own_class_doc(obj) if kind == "class" else inspect.getdoc(obj)
        if not (doc or "").strip():
            missing.append(f"{label} ({kind})")
    assert not missing, f"{len(missing)} public names without a docstring:\n  " + "\n  ".join(missing)


def _dotted(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_assignments():
    """constant name -> [(module, path, documented?)] over the package's modules."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        module_doc = ast.get_docstring(tree) or ""
        for node, after in zip(tree.body, tree.body[1:] + [None]):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            # a string literal right after the assignment is an attribute docstring (Sphinx reads it too)
            docstring = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) \
                and isinstance(after.value.value, str) and bool(after.value.value.strip())
            for target in targets:
                if not isinstance(target, ast.Name):
                    continue
                above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                on_lines = "\n".join(lines[node.lineno - 1:node.end_lineno])
                documented = docstring or above.startswith("#:") or "#:" in on_lines \
                    or bool(_mentions(target.id).search(module_doc))
                found.setdefault(target.id, []).append((_dotted(path), path, documented))
    return found


def test_public_constants_are_documented():
    assignments = _top_level_assignments()
    offenders = []
    for module_name, name, obj in _public_objects():
        if inspect.ismodule(obj) or _is_function(obj) or inspect.isclass(obj):
            continue
        places = assignments.get(name, [])
        # the assignment the name is exported from: in that module, or in a module of that package
        own = [p for p in places if p[0] == module_name or p[0].startswith(module_name + ".")]
        places = own or places
        if not places:
            offenders.append(f"{module_name}.{name}: no top-level assignment found")
        elif not any(documented for _, _, documented in places):
            offenders.append(f"{module_name}.{name}: no '#:' comment or docstring and not named in the module "
                             f"docstring ({', '.join(str(p.relative_to(PACKAGE_DIR)) for _, p, _ in places)})")
    assert not offenders, f"{len(offenders)} undocumented public constants:\n  " + "\n  ".join(offenders)


def test_physical_parameters_state_their_units():
    offenders = [o for label, (kind, obj, doc) in sorted(_api().items())
                 for o in unit_offences(label, _parameters(kind, obj), doc)]
    assert not offenders, f"{len(offenders)} parameters without a unit:\n  " + "\n  ".join(offenders)


def test_atom_arrays_state_their_shape():
    offenders = [o for label, (kind, obj, doc) in sorted(_api().items())
                 for o in shape_offences(label, _parameters(kind, obj), doc)]
    assert not offenders, f"{len(offenders)} array parameters without a shape:\n  " + "\n  ".join(offenders)


def test_allow_list_entries_exist():
    """An allow-list entry for a parameter that no longer exists is stale."""
    api = _api()
    stale = [f"{label}({name})" for label, name in ALLOW
             if label not in api or name not in _parameters(api[label][0], api[label][1])]
    assert not stale, "stale ALLOW entries: " + ", ".join(stale)


# the checkers themselves: they must flag what is missing and accept what is stated

def _example(positions, temperature, timestep_fs, cutoff):
    """Toy.

    positions: atom positions (n_atoms, 3) in Angstrom.
    temperature: the bath.
    cutoff: the neighbour cutoff, see `positions` (Angstrom).
    """


@pytest.mark.parametrize("doc, expected", [
    (inspect.getdoc(_example), ["toy(temperature)"]),
    ("positions (n, 3) Angstrom; temperature in K; cutoff: 5 Angstrom.", []),
    ("positions (n, 3) Angstrom. temperature: (K,) frames. cutoff: Angstrom.", ["toy(temperature)"]),
    ("positions (n, 3) eV/A; temperature K. cutoff: eV.", ["toy(positions)", "toy(cutoff)"]),
    ("positions, temperature, cutoff: see below. They are in Angstrom and K.",
     ["toy(positions)", "toy(temperature)", "toy(cutoff)"]),
])
def test_unit_checker(doc, expected):
    params = ["positions", "temperature", "timestep_fs", "cutoff"]
    found = [o.split(":")[0] for o in unit_offences("toy", params, doc)]
    assert found == expected


@pytest.mark.parametrize("doc, flagged", [
    ("positions: (n_atoms, 3) Angstrom.", False), ("positions: (N, 3).", False), ("positions [(N_s, 3)]", False),
    ("positions: (n,) things", False), ("positions: Angstrom.", True), ("positions (Angstrom)", True),
    ("positions in Angstrom. Shape (n, 3).", True), ("positions: returns (rmsd, permutation).", True),
])
def test_shape_checker(doc, flagged):
    assert bool(shape_offences("toy", ["positions"], doc)) is flagged


def test_generated_dataclass_doc_is_not_a_docstring():
    @dataclasses.dataclass
    class Bare:
        x: int = 0

    @dataclasses.dataclass
    class Documented:
        """A documented one."""
        x: int = 0

    assert _own_class_doc(Bare) is None and _own_class_doc(Documented) == "A documented one."
