"""ridgeline.dtypes: the one dtype table, its lookups, and that no module keeps a copy of it."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ridgeline import dtypes as D
from ridgeline.errors import RidgelineError

ROOT = Path(__file__).resolve().parents[1]

# the storage widths, written out (not read from the table they check)
WIDTHS = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "fp8_e4m3": 1,
          "fp8_e4m3fnuz": 1, "fp8_e5m2": 1, "fp8_e5m2fnuz": 1, "int8": 1, "uint8": 1,
          "int4": 0.5}

# spellings users and libraries write, and what each means
SPELLINGS = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
             "float8": "fp8", "w8a8": "fp8", "e4m3": "fp8_e4m3", "fp8_e4m3fn": "fp8_e4m3",
             "float8_e4m3fn": "fp8_e4m3", "float8_e4m3fnuz": "fp8_e4m3fnuz",
             "e5m2": "fp8_e5m2", "float8_e5m2": "fp8_e5m2", "float8_e5m2fnuz": "fp8_e5m2fnuz",
             "awq": "int4", "gptq": "int4"}


# --- names ------------------------------------------------------------------------------

def test_the_table_holds_every_dtype_once():
    assert set(D.NAMES) == set(WIDTHS)
    assert len(D.NAMES) == len(set(D.NAMES))
    every = [n for d in D.TABLE for n in (d.name, *d.aliases)]
    assert len(every) == len(set(every)) == len(D.BY_NAME)   # no name means two dtypes


@pytest.mark.parametrize("entry", D.TABLE, ids=lambda d: d.name)
def test_every_name_and_alias_resolves_to_its_entry(entry):
    for name in (entry.name, *entry.aliases):
        for spelling in (name, name.upper(), f"  {name} "):
            assert D.canonical(spelling) == entry.name
            assert D.get(spelling) is entry


@pytest.mark.parametrize("alias, name", sorted(SPELLINGS.items()))
def test_known_spellings(alias, name):
    assert D.canonical(alias) == name


@pytest.mark.parametrize("name, width", sorted(WIDTHS.items()))
def test_byte_widths(name, width):
    got = D.bytes_per_element(name)
    assert got == width
    # whole bytes stay ints, so byte counts in records stay ints (4096 x 4096 x 2, not 33554432.0)
    assert isinstance(got, int) == (width != 0.5)
    assert D.BYTES[name] == width


def test_aliases_have_their_dtype_width():
    assert D.bytes_per_element("bfloat16") == 2 and D.bytes_per_element("E4M3") == 1
    assert D.bytes_per_element("gptq") == 0.5
    assert D.BYTES["float8_e4m3fnuz"] == 1 and D.BYTES.get("fp4", 2) == 2


@pytest.mark.parametrize("call", [D.canonical, D.bytes_per_element, D.get, D.planner_name,
                                  D.unit_roundoff, D.torch_dtype])
@pytest.mark.parametrize("name", ["fp7", "", "int3", None])
def test_an_unknown_name_is_one_clear_error(call, name):
    with pytest.raises(D.UnknownDtype) as err:
        call(name)
    msg = str(err.value)
    assert msg.startswith(f"unknown dtype {name!r}") and "bf16" in msg and "fp8_e4m3" in msg
    assert isinstance(err.value, RidgelineError)  # the CLI prints it as one line


def test_lenient_lookups_of_unknown_names():
    assert D.find("fp7") is None and D.is_fp8("fp7") is False
    assert D.compute_dtype_for("fp7", {"fp16": 1, "fp32": 1}) == "fp16"   # fallback only
    assert D.compute_dtype_for("fp7", {"fp16": 1}, fallback=False) is None


def test_kinds_and_tensor_cores():
    assert [d.name for d in D.TABLE if d.kind == "fp8"] == [
        "fp8", "fp8_e4m3", "fp8_e4m3fnuz", "fp8_e5m2", "fp8_e5m2fnuz"]
    assert D.FP8_FORMATS == ("fp8_e4m3", "fp8_e4m3fnuz", "fp8_e5m2", "fp8_e5m2fnuz")
    assert {d.name for d in D.TABLE if d.kind == "int"} == {"int8", "uint8", "int4"}
    assert {d.name for d in D.TABLE if not d.tensor_core} == {"fp32", "uint8", "int4"}
    assert D.is_fp8("e4m3") and D.is_fp8("fp8") and not D.is_fp8("int8")


def test_planner_names_storage_not_formats():
    for name in ("fp8", "e4m3", "fp8_e4m3fnuz", "fp8_e5m2", "float8_e5m2fnuz", "w8a8"):
        assert D.planner_name(name) == "fp8"
    assert D.planner_name("bfloat16") == "bf16" and D.planner_name("awq") == "int4"


def test_unit_roundoff_from_mantissa_bits():
    assert D.unit_roundoff("bf16") == 2.0**-8
    assert D.unit_roundoff("half") == 2.0**-11
    assert D.unit_roundoff("fp32") == 2.0**-24
    assert D.unit_roundoff("fp8_e4m3") == 2.0**-4 and D.unit_roundoff("e5m2") == 2.0**-3
    for no_format in ("fp8", "int8"):
        with pytest.raises(D.UnknownDtype, match="no fixed float format"):
            D.unit_roundoff(no_format)


# --- compute dtype and device formats ------------------------------------------------------

H100 = {"fp32": 60.0, "tf32": 400.0, "bf16": 700.0, "fp16": 700.0, "fp8_e4m3": 1400.0}
MI300 = {"fp32": 150.0, "bf16": 900.0, "fp8_e4m3fnuz": 1800.0}
A100 = {"fp32": 19.0, "tf32": 150.0, "fp16": 280.0, "bf16": 280.0}


@pytest.mark.parametrize("name, peaks, want", [
    ("bf16", H100, "bf16"), ("fp8", H100, "fp8_e4m3"), ("fp8", MI300, "fp8_e4m3fnuz"),
    ("fp8_e4m3", MI300, "fp8_e4m3fnuz"), ("fp8_e4m3fnuz", H100, "fp8_e4m3"),
    ("fp8_e5m2", H100, "fp8_e4m3"), ("fp8_e5m2", MI300, "fp8_e4m3fnuz"),
    ("int8", H100, "fp8_e4m3"), ("int8", MI300, "fp8_e4m3fnuz"), ("int4", H100, "bf16"),
    ("fp8", A100, "bf16"), ("tf32", MI300, "bf16"), ("fp16", MI300, "bf16"),
    ("fp16", {"fp32": 1.0}, "fp32"), ("fp16", {"int8": 1.0}, "int8"), ("bf16", {}, None),
    ("bfloat16", {"bf16": 1.0, "fp16": 1.0}, "bf16"), ("float16", A100, "fp16"),
])
def test_compute_dtype_for(name, peaks, want):
    assert D.compute_dtype_for(name, peaks) == want


def test_compute_dtype_for_without_fallback():
    assert D.compute_dtype_for("fp8_e4m3fnuz", ["fp8_e4m3"], fallback=False) == "fp8_e4m3"
    assert D.compute_dtype_for("fp8", A100, fallback=False) is None
    assert D.compute_dtype_for("tf32", H100, fallback=False) == "tf32"


def test_fp8_format_of_a_device():
    assert D.fp8_format({"fp8_e4m3": True, "fp8_e5m2": True}) == "fp8_e4m3"           # H100
    assert D.fp8_format({"fp8_e4m3": False, "fp8_e4m3fnuz": True}) == "fp8_e4m3fnuz"  # MI300
    assert D.fp8_format({"fp8_e4m3": True, "fp8_e4m3fnuz": True}) == "fp8_e4m3"       # OCP first
    assert D.fp8_format({"fp8_e4m3": False, "bf16": True}) is None                    # A100
    assert D.fp8_format({}) is None and D.fp8_format(None) is None


# --- torch, only when asked ------------------------------------------------------------------

PLANNER_MODULES = ("ridgeline.dtypes", "ridgeline.roofline.model", "ridgeline.sizing.precision",
                   "ridgeline.validation.footprint", "ridgeline.reports.tables")


@pytest.mark.parametrize("module", PLANNER_MODULES)
def test_importing_imports_no_torch(module):
    code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_torch_dtypes():
    torch = pytest.importorskip("torch")
    for d in D.TABLE:
        if d.torch_name is None:
            continue
        assert D.torch_dtype(d.name) is getattr(torch, d.torch_name, None)
    assert D.torch_dtype("bfloat16") is torch.bfloat16
    assert D.torch_dtype("tf32") is torch.float32          # tf32 is fp32 storage
    assert D.torch_dtype("e4m3") is torch.float8_e4m3fn
    assert torch.finfo(D.torch_dtype("fp8_e4m3")).eps == 2 * D.unit_roundoff("fp8_e4m3")
    for name in ("bf16", "fp16", "fp32"):
        assert torch.finfo(D.torch_dtype(name)).eps == 2 * D.unit_roundoff(name)
        size = torch.tensor([], dtype=D.torch_dtype(name)).element_size()
        assert size == D.bytes_per_element(name)
    with pytest.raises(D.UnknownDtype, match="name a format"):
        D.torch_dtype("fp8")
    with pytest.raises(D.UnknownDtype, match="int4 has no torch dtype"):
        D.torch_dtype("int4")


def test_from_torch():
    torch = pytest.importorskip("torch")
    assert D.from_torch(torch.float32) == "fp32"           # not tf32
    assert [D.from_torch(getattr(torch, d.torch_name)) for d in D.TABLE
            if d.torch_name and d.name != "tf32"] == [d.name for d in D.TABLE
                                                      if d.torch_name and d.name != "tf32"]
    with pytest.raises(D.UnknownDtype, match="unknown torch dtype torch.float64"):
        D.from_torch(torch.float64)


# --- one table: the former copies are gone ------------------------------------------------

USERS = ("roofline/model.py", "sizing/precision.py", "probes/gemv.py", "probes/matmul.py",
         "probes/collective_worker.py", "validation/footprint.py", "validation/transformer.py",
         "kernels/gemv.py", "datasheets.py")  # datasheets: the fnuz lookup tables.py had inline
REMOVED = {"roofline/model.py": ("COMPUTE_DTYPE_ALIASES",),
           "sizing/precision.py": ("_SYNONYMS", "_DEVICE_FLAGS"),
           "probes/gemv.py": ("DTYPE_BYTES", "FP8_NAMES", "_torch_dtype"),
           "probes/matmul.py": ("ELEMENT_BYTES",),
           "probes/collective_worker.py": ("DTYPE_BYTES", "_torch_dtype"),
           "validation/footprint.py": ("_WEIGHT_ALIASES",),
           "validation/transformer.py": ("_TORCH_DTYPES",)}


def _tree(rel: str) -> ast.Module:
    return ast.parse((ROOT / "ridgeline" / rel).read_text())


def _dtype_fact_table(node: ast.Dict) -> bool:
    """A dict literal keyed by dtype names whose values repeat the table: widths, names
    (aliases) or torch dtypes. Tolerances keyed by dtype are policy, not a copy."""
    keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
    if not keys or len(keys) != len(node.keys) or not all(
            isinstance(k, str) and D.find(k) for k in keys):
        return False
    values = node.values
    if all(isinstance(v, ast.Constant) and isinstance(v.value, (int, float)) for v in values):
        return all(v.value == D.bytes_per_element(k) for k, v in zip(keys, values))
    if all(isinstance(v, ast.Constant) and isinstance(v.value, str) for v in values):
        return all(D.find(v.value) for v in values)
    return all("torch" in ast.unparse(v) for v in values)


@pytest.mark.parametrize("rel", USERS)
def test_no_module_keeps_its_own_dtype_table(rel):
    tree = _tree(rel)
    copies = [ast.unparse(n)[:80] for n in ast.walk(tree)
              if isinstance(n, ast.Dict) and _dtype_fact_table(n)]
    assert not copies, f"{rel} repeats ridgeline.dtypes: {copies}"
    defined = {t.id for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
               for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
               if isinstance(t, ast.Name)}
    defined |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert not defined & set(REMOVED.get(rel, ())), f"{rel} defines a removed table"
    uses = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
            and (n.module == "ridgeline.dtypes"
                 or (n.module == "ridgeline" and any(a.name == "dtypes" for a in n.names)))]
    assert uses, f"{rel} does not use ridgeline.dtypes"


def test_the_check_finds_a_copy():
    for copy in ('{"fp32": 4, "bf16": 2}', '{"fp8_e4m3fnuz": "fp8_e4m3"}',
                 '{"bf16": torch.bfloat16, "fp16": torch.float16}'):
        assert _dtype_fact_table(ast.parse(copy, mode="eval").body)
    tolerances = '{"bf16": 2**-6, "fp16": 2**-8, "fp32": 1e-3}'
    assert not _dtype_fact_table(ast.parse(tolerances, mode="eval").body)


def test_the_old_model_table_is_gone():
    from ridgeline.roofline import interconnect, model

    assert not hasattr(model, "DTYPE_BYTES")  # every width is read from ridgeline.dtypes
    assert interconnect.DTYPE_BYTES is D.BYTES


# --- callers agree with the table ------------------------------------------------------------

def test_planner_precision_reads_the_table():
    from ridgeline.sizing.precision import BYTES, Precision, device_supports, normalize_dtype

    assert BYTES == {"fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5, "fp32": 4.0}
    assert all(isinstance(v, float) for v in BYTES.values())   # plan JSON keeps 2.0, not 2
    p = Precision("float8_e4m3fnuz", "e4m3", "bfloat16")
    assert (p.weights, p.activations, p.kv_cache) == ("fp8", "fp8", "bf16")
    assert (p.weight_bytes, p.kv_bytes, p.base_bytes) == (1.0, 2.0, 2.0)
    assert Precision("gptq").weight_bytes == 0.5 + 2.0 / 128
    # every fp8 format is fp8 storage (e5m2fnuz was refused before the table)
    assert normalize_dtype("fp8_e5m2fnuz", ("fp8",), "weight") == "fp8"
    with pytest.raises(RidgelineError, match=r"weight dtype 'fp7' is not one of fp8, bf16"):
        normalize_dtype("fp7", ("fp8", "bf16"), "weight")
    with pytest.raises(RidgelineError, match=r"weight dtype 'tf32' is not one of"):
        normalize_dtype("tf32", ("fp8", "bf16"), "weight")
    mi300 = {"bf16": True, "fp8_e4m3": False, "fp8_e4m3fnuz": True}
    assert device_supports(mi300, "fp8") and device_supports(mi300, "int8")
    assert device_supports({"bf16": True, "fp8_e4m3": False}, "int8") is False
    assert device_supports({"bf16": True}, "fp8") is False and device_supports(None, "fp8") is None


def test_probe_work_counts_use_the_table():
    from ridgeline.probes import collective_worker as cw
    from ridgeline.probes import gemv, matmul

    assert gemv.weight_bytes(4096, 1823, "fp8_e4m3fnuz") == 4096 * 1823
    assert gemv.bytes_read(3, 4096, 1823, "bf16") == 4096 * 1823 * 2 + 3 * 1823 * 2
    assert matmul.matmul_bytes(17, 4096, 1823, "fp8_e4m3") == ((17 * 1823 + 1823 * 4096) * 1,
                                                               17 * 4096 * 2)   # bf16 out
    assert matmul.matmul_bytes(17, 4096, 1823, "tf32") == ((17 * 1823 + 1823 * 4096) * 4,
                                                           17 * 4096 * 4)
    case = cw.planned_cases({"collectives": ["allreduce"], "dtypes": ["bf16", "fp32"],
                             "sizes": [1024]}, 2)
    assert [(c.dtype, c.count) for c in case] == [("bf16", 512), ("fp32", 256)]
    assert cw.sum_tolerance("bf16", 8, 255) == 8 * 254 * 2.0**-8 * 3
