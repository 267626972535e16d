"""CuPy compatibility of the engine's array-generic code.

Without a GPU (CI): every array-library name the kernels and engine steps use through ``xp``,
``am.sparse`` or ``_special(am)`` must exist in CuPy (checked against the public names of
CuPy 14.2 in ``tests/data/cupy_names.txt``); idioms that break or turn non-deterministic on
CuPy are rejected; the CuPy-motivated helpers equal their plain SciPy counterparts.

With a GPU (``-m gpu``): the primitives whose CuPy semantics the engine relies on (stable
sorts, lexsort, unique's first indices, add.reduceat, bincount) equal NumPy's, the
deterministic building blocks give NumPy's bits, and sparse products repeat bitwise.

The name list is regenerated with an installed CuPy (no GPU needed)::

    mods = {
        "xp": "cupy",
        "xp.linalg": "cupy.linalg",
        "xp.random": "cupy.random",
        "xp.fft": "cupy.fft",
        "sparse": "cupyx.scipy.sparse",
        "special": "cupyx.scipy.special",
    }
    # one line "alias.attr" per public attribute; for cupy ufuncs also "xp.<ufunc>.<method>"
    # for each of reduce, accumulate, reduceat, outer, at that exists

Without CUDA the ``gpu`` tests run on the CuPy double (``gpu_sc.testing.cupy_double``, see
tests/conftest.py): a full duck-array namespace, dense and sparse, with CuPy 14.2's rules.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_sc.dispatch.arrays import array_module, device_sparse_dtype, is_device_array, to_host_array
from gpu_sc.kernels import leiden as leiden_k
from gpu_sc.kernels import markers as markers_k
from gpu_sc.kernels import pca as pca_k
from gpu_sc.kernels.chunks import is_device
from gpu_sc.kernels.reductions import axis_nnz, axis_sum

SRC = Path(__file__).resolve().parents[1] / "src" / "gpu_sc"
ENGINE_FILES = sorted([*SRC.glob("kernels/*.py"), *SRC.glob("engine/*.py")])
NAMES_FILE = Path(__file__).parent / "data" / "cupy_names.txt"
NP = array_module("numpy")


def _cupy_names() -> set[str]:
    lines = NAMES_FILE.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


_USES = [
    # (pattern, alias in cupy_names.txt): `xp.name`, `am.xp.name`, `am.sparse.name`,
    # `_special(am).name`
    (re.compile(r"(?<![\w.])(?:am\.|ctx\.am\.)?xp((?:\.[A-Za-z_]\w*)+)"), "xp"),
    (re.compile(r"(?<![\w.])(?:am|ctx\.am)\.sparse((?:\.[A-Za-z_]\w*)+)"), "sparse"),
    (re.compile(r"_special\(am\)((?:\.[A-Za-z_]\w*)+)"), "special"),
]


def _uses() -> list[tuple[str, int, str]]:
    found = []
    for path in ENGINE_FILES:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, alias in _USES:
                for m in pattern.finditer(code):
                    found.append((f"{path.parent.name}/{path.name}", lineno, alias + m.group(1)))
    return found


def _known(name: str, names: set[str]) -> bool:
    """``name`` is a CuPy name, or an attribute of a listed object whose own attributes the
    list does not enumerate (``xp.cuda.Device``); ufuncs and listed modules are enumerated."""
    parts = name.split(".")
    if name in names or parts[-1].startswith("__"):  # module dunders (``__name__``)
        return True
    for cut in range(len(parts) - 1, 1, -1):
        prefix = ".".join(parts[:cut])
        if prefix in names:
            enumerated = prefix in {"xp.linalg", "xp.random", "xp.fft"} or any(
                n.startswith(prefix + ".") for n in names
            )
            return not enumerated
    return False


def test_engine_uses_only_names_that_exist_in_cupy():
    names = _cupy_names()
    uses = _uses()
    assert len(uses) > 100, "the scan found too few uses: is the pattern still right?"
    missing = sorted(
        {f"{where}:{line}: {name}" for where, line, name in uses if not _known(name, names)}
    )
    assert not missing, "names CuPy 14.2 lacks (use another spelling or kernels/_compat):\n" + (
        "\n".join(missing)
    )


def test_name_check_rejects_numpy_only_names():
    names = _cupy_names()
    assert _known("xp.add.reduceat", names) and _known("xp.linalg.eigh", names)
    assert _known("special.betainc", names) and _known("sparse.csr_matrix", names)
    for numpy_only in (
        "xp.errstate",
        "xp.ma.masked_invalid",
        "xp.linalg.eigvalsh_tridiagonal",
        "sparse.lil_matrix",
        "xp.add.nosuchmethod",
    ):
        assert not _known(numpy_only, names), numpy_only


_FORBIDDEN = [
    (
        re.compile(r"\.\s*at\s*\("),
        "ufunc.at scatters with atomics on CuPy (non-deterministic "
        "for floats); sort the ids and sum runs (kernels/leiden.py _scatter_add)",
    ),
    (
        re.compile(r"bincount\([^)]*weights\s*="),
        "bincount(weights=) adds floats with atomics on CuPy; use a sorted segment sum",
    ),
    (
        re.compile(r"kind\s*=\s*[\"'](quicksort|mergesort|heapsort)"),
        "CuPy's sort/argsort accept only kind=None or 'stable'",
    ),
    (re.compile(r"sparse\.\w+_array\b"), "keep the *_matrix classes shared by scipy and cupyx"),
    (re.compile(r"\.getnnz\("), "count nonzeros with reductions.axis_nnz (one code path)"),
    (
        re.compile(r"\bnp\.\w+\(\s*adata\.(X|layers|obsm|obsp|varm|raw)\b"),
        "adata's matrices may live on the device (device output); CuPy refuses implicit "
        "conversion, so go through am.to_host",
    ),
]


def test_engine_code_avoids_idioms_that_break_or_race_on_cupy():
    bad = []
    for path in ENGINE_FILES:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            bad += [f"{path.name}:{lineno}: {why}" for rx, why in _FORBIDDEN if rx.search(code)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "dtype, expected",
    [
        (np.int32, np.float64),
        (np.int64, np.float64),
        (np.uint16, np.float64),
        (np.float16, np.float32),
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.bool_, np.bool_),
    ],
)
def test_sparse_values_cupyx_cannot_store_travel_as_floats(dtype, expected):
    assert device_sparse_dtype(dtype) == np.dtype(expected)


def test_subclasses_of_device_arrays_count_as_device_arrays():
    """AnnData wraps views of CuPy arrays in subclasses defined in ``anndata._core.views``:
    judging by the class's own module would send them to ``np.asarray`` (which CuPy refuses)."""
    host = np.arange(3.0)
    fake_cupy = type("ndarray", (), {"__module__": "cupy._core.core", "get": lambda self: host})
    view = type("CupyArrayView", (fake_cupy,), {"__module__": "anndata._core.views"})()
    assert is_device_array(view) and is_device(view)
    assert to_host_array(view, None) is host
    for plain in (host, sp.csr_matrix(np.eye(2)), [1.0], 1.0):
        assert not is_device_array(plain)


def _sparse(fmt="csr", seed=0, shape=(300, 40), density=0.2):
    rng = np.random.default_rng(seed)
    x = sp.random(*shape, density=density, format=fmt, random_state=rng, dtype=np.float64)
    x.data = np.round(x.data * 10).astype(np.float32) + 1  # ties, like counts
    return x


@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
def test_pca_products_without_transposed_sparse_ops_equal_scipy(fmt):
    x = _sparse("csr" if fmt == "dense" else fmt)
    x = x.toarray() if fmt == "dense" else x
    v = np.random.default_rng(1).standard_normal((x.shape[0], 5))
    total, gram = pca_k.gram_block(NP, x)
    x64 = (x.toarray() if sp.issparse(x) else x).astype(np.float64)
    np.testing.assert_allclose(total, x64.sum(axis=0), rtol=1e-13)
    np.testing.assert_allclose(gram, x64.T @ x64, rtol=1e-12)
    np.testing.assert_allclose(pca_k.t_matmul(NP, x, v), x64.T @ v, rtol=1e-12, atol=1e-12)


def test_gpu_session_script_parses_and_rejects_unknown_phases(tmp_path):
    import subprocess

    script = SRC.parents[1] / "scripts" / "gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    res = subprocess.run(
        ["bash", str(script), "nonsense"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path)},
    )
    assert res.returncode == 2 and "usage:" in res.stderr


# ---------------------------------------------------------------------------------------------
# on a GPU


@pytest.fixture
def cp_am():  # per test: on CI the CuPy double is installed for each gpu test
    return array_module("cupy")


def _bits_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_integer_sparse_counts_reach_the_device_as_float64(cp_am, fmt):
    x = _sparse(fmt).astype(np.int64)
    dev = cp_am.asarray(x)
    assert dev.format == fmt and dev.dtype == np.float64
    np.testing.assert_array_equal(cp_am.to_host(dev).toarray(), x.toarray())


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
@pytest.mark.parametrize("axis", [0, 1])
def test_reductions_equal_numpy_and_repeat_bitwise(cp_am, fmt, axis):
    x = _sparse("csr" if fmt == "dense" else fmt, shape=(2000, 300))
    x = x.toarray() if fmt == "dense" else x
    dev = cp_am.asarray(x)
    sums = [cp_am.to_host(axis_sum(cp_am, dev, axis)) for _ in range(2)]
    assert _bits_equal(*sums)
    np.testing.assert_allclose(sums[0], axis_sum(NP, x, axis), rtol=1e-13)
    np.testing.assert_array_equal(cp_am.to_host(axis_nnz(cp_am, dev, axis)), axis_nnz(NP, x, axis))


@pytest.mark.gpu
def test_pca_products_repeat_bitwise_and_equal_numpy(cp_am):
    x = _sparse("csr", shape=(5000, 200), density=0.1)
    v = np.random.default_rng(2).standard_normal((x.shape[0], 8))
    dev, dv = cp_am.asarray(x), cp_am.asarray(v)
    runs = [
        [cp_am.to_host(a) for a in (*pca_k.gram_block(cp_am, dev), pca_k.t_matmul(cp_am, dev, dv))]
        for _ in range(2)
    ]
    for a, b in zip(*runs, strict=True):
        assert _bits_equal(a, b)
    ref = [*pca_k.gram_block(NP, x), pca_k.t_matmul(NP, x, v)]
    for got, want in zip(runs[0], ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-9)


@pytest.mark.gpu
def test_sort_and_count_primitives_have_numpys_semantics(cp_am):
    import cupy

    rng = np.random.default_rng(3)
    ints = rng.integers(0, 50, 10_000)
    floats = np.round(rng.standard_normal(10_000), 1)  # many ties, negatives
    d_ints = cupy.asarray(ints)
    np.testing.assert_array_equal(
        cupy.argsort(d_ints, kind="stable").get(), np.argsort(ints, kind="stable")
    )
    keys = np.stack([floats, -floats, ints.astype(np.float64)])
    np.testing.assert_array_equal(cupy.lexsort(cupy.asarray(keys)).get(), np.lexsort(keys))
    for got, want in zip(
        cupy.unique(d_ints, return_index=True, return_inverse=True),
        np.unique(ints, return_index=True, return_inverse=True),
        strict=True,
    ):
        np.testing.assert_array_equal(got.get().ravel(), want.ravel())
    sorted_ints = np.sort(ints)
    np.testing.assert_array_equal(
        cupy.searchsorted(cupy.asarray(sorted_ints), d_ints, side="right").get(),
        np.searchsorted(sorted_ints, ints, side="right"),
    )
    np.testing.assert_array_equal(
        cupy.bincount(d_ints, minlength=80).get(), np.bincount(ints, minlength=80)
    )
    starts = np.flatnonzero(np.r_[True, sorted_ints[1:] != sorted_ints[:-1]])
    integer_valued = (sorted_ints.astype(np.float64) ** 3) - sorted_ints
    np.testing.assert_array_equal(  # exact: integer-valued sums far below 2**53
        cupy.add.reduceat(cupy.asarray(integer_valued), cupy.asarray(starts)).get(),
        np.add.reduceat(integer_valued, starts),
    )


@pytest.mark.gpu
def test_leiden_building_blocks_give_numpys_bits(cp_am):
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 300, 20_000)
    cols = rng.integers(0, 300, 20_000)
    values = rng.standard_normal(20_000)
    d_ids, d_cols, d_values = (cp_am.asarray(a) for a in (ids, cols, values))
    assert _bits_equal(
        cp_am.to_host(leiden_k._segment_sum(cp_am, d_ids, d_values, 300)),
        leiden_k._segment_sum(NP, ids, values, 300),
    )
    for got, want in zip(
        leiden_k._group_pairs(cp_am, d_ids, d_cols, d_values, 300),
        leiden_k._group_pairs(NP, ids, cols, values, 300),
        strict=True,
    ):
        assert _bits_equal(cp_am.to_host(got), want)
    rounded = np.round(values, 1)  # ties: the smallest column must win on both
    for got, want in zip(
        leiden_k._row_argmax(cp_am, d_ids, d_cols, cp_am.asarray(rounded)),
        leiden_k._row_argmax(NP, ids, cols, rounded),
        strict=True,
    ):
        assert _bits_equal(cp_am.to_host(got), want)


@pytest.mark.gpu
def test_marker_ranks_tie_sums_and_p_values_match_numpy(cp_am):
    x = _sparse("csc", shape=(3000, 60), density=0.3)
    x.data[::7] *= -1  # negative values rank before the zeros
    masks = np.zeros((3, x.shape[0]), dtype=bool)
    masks[np.random.default_rng(5).integers(0, 3, x.shape[0]), np.arange(x.shape[0])] = True
    got = markers_k.wilcoxon_rank_sums(cp_am, x, masks)
    want = markers_k.wilcoxon_rank_sums(NP, x, masks)
    np.testing.assert_array_equal(cp_am.to_host(got[0]), want[0])  # half-integer sums: exact
    np.testing.assert_allclose(cp_am.to_host(got[1]), want[1], rtol=1e-12)
    dense = x.toarray()
    ranks_dev, ties_dev = markers_k.rank_columns(cp_am, cp_am.asarray(dense))
    ranks, ties = markers_k.rank_columns(NP, dense)
    np.testing.assert_array_equal(cp_am.to_host(ranks_dev), ranks)
    np.testing.assert_allclose(cp_am.to_host(ties_dev), ties, rtol=1e-12)
    sizes = masks.sum(axis=1)[:, None].astype(np.float64)
    z_dev, p_dev = markers_k.wilcoxon_z(
        cp_am, got[0], got[1][None, :], cp_am.asarray(sizes), got[2], tie_correct=True
    )
    z, p = markers_k.wilcoxon_z(NP, want[0], want[1][None, :], sizes, want[2], tie_correct=True)
    np.testing.assert_allclose(cp_am.to_host(z_dev), z, rtol=1e-12)
    np.testing.assert_allclose(cp_am.to_host(p_dev), p, rtol=1e-9, atol=1e-300)
    sums = markers_k.group_sums(NP, x, masks)
    m, v = sums.mean_var(np)
    args = (m[:1], v[:1], sizes[:1], m[1:2], v[1:2], sizes[1:2])
    s_dev, p_dev = markers_k.t_test(cp_am, *(cp_am.asarray(a) for a in args))
    s, p = markers_k.t_test(NP, *args)
    np.testing.assert_allclose(cp_am.to_host(s_dev), s, rtol=1e-12)
    np.testing.assert_allclose(cp_am.to_host(p_dev), p, rtol=1e-9, atol=1e-300)


@pytest.mark.gpu
def test_marker_group_sums_repeat_bitwise(cp_am):
    x = _sparse("csc", shape=(5000, 100), density=0.2)
    masks = np.zeros((4, x.shape[0]), dtype=bool)
    masks[np.arange(x.shape[0]) % 4, np.arange(x.shape[0])] = True
    runs = [markers_k.group_sums(cp_am, x, masks) for _ in range(2)]
    for field in ("sums", "sumsq", "nnz", "total_sum", "total_sumsq"):
        a, b = (cp_am.to_host(getattr(r, field)) for r in runs)
        assert _bits_equal(a, b), field
        np.testing.assert_allclose(
            a, getattr(markers_k.group_sums(NP, x, masks), field), rtol=1e-12
        )


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
def test_anndata_views_of_device_matrices_reach_the_engine_as_plain_device_arrays(cp_am, fmt):
    import anndata as ad

    from gpu_sc.dispatch.arrays import module_of
    from gpu_sc.engine._matrix import _get_x

    x = _sparse("csr" if fmt == "dense" else fmt)
    x = x.toarray() if fmt == "dense" else x
    adata = ad.AnnData(X=cp_am.asarray(x))
    view = adata[::2]
    assert type(view.X).__module__.startswith("anndata")  # the wrapper this guards against
    assert module_of(view.X).name == "cupy"
    got = _get_x(view, None)
    assert type(got).__module__.startswith("cupy")
    want = x[::2]
    got_host = cp_am.to_host(got)
    np.testing.assert_array_equal(
        got_host.toarray() if sp.issparse(got_host) else got_host,
        want.toarray() if sp.issparse(want) else want,
    )


@pytest.mark.gpu
def test_device_resident_pipeline_runs_the_engine_where_numpy_does_and_ends_on_host(
    pbmc3k_raw, pbmc3k_tutorial_numpy
):
    """``gpu_sc.pipeline(backend="cupy")`` keeps CuPy arrays in AnnData between steps (the
    parity suite runs with host output), so AnnData's subsetting, ``.raw`` and the engine's
    device inputs are exercised only here."""
    from sklearn.metrics import adjusted_rand_score

    import gpu_sc
    from gpu_sc.dispatch import cuda_status
    from gpu_sc.dispatch.provenance import pipeline_record, provenance

    on_gpu = gpu_sc.pipeline(pbmc3k_raw.copy(), backend="cupy")
    on_cpu = pbmc3k_tutorial_numpy
    gpu_steps = [(p["step"], p["backend"]) for p in provenance(on_gpu)]
    cpu_steps = [(p["step"], p["backend"]) for p in provenance(on_cpu)]
    assert [s for s, _ in gpu_steps] == [s for s, _ in cpu_steps]
    engine_gaps = [
        (step, g, c)
        for (step, g), (_, c) in zip(gpu_steps, cpu_steps, strict=True)
        if c == "numpy" and g != "cupy"
    ]
    assert not engine_gaps, f"steps the numpy engine ran but cupy did not: {engine_gaps}"
    assert pipeline_record(on_gpu)["shapes"] == pipeline_record(on_cpu)["shapes"]
    arrays = [
        on_gpu.X,
        on_gpu.raw.X,
        *on_gpu.layers.values(),
        *on_gpu.obsm.values(),
        *on_gpu.varm.values(),
        *on_gpu.obsp.values(),
    ]
    assert not [type(a) for a in arrays if type(a).__module__.startswith("cupy")]
    # No silent fallback: every step the cupy backend did not run is one the engine lacks.
    resource_fallbacks = [
        (p["step"], p["fallback_reason"])
        for p in provenance(on_gpu)
        if p["backend"] == "scanpy"
        and p["fallback_reason"]
        and "no cupy engine implementation" not in p["fallback_reason"]
    ]
    assert not resource_fallbacks
    from gpu_sc.parity import metrics as M

    ari = adjusted_rand_score(on_cpu.obs["leiden"], on_gpu.obs["leiden"])
    pca_corr = float(np.min(np.abs(M.abs_correlations(on_cpu.obsm["X_pca"], on_gpu.obsm["X_pca"]))))
    nbrs = [
        [m.indices[m.indptr[i] : m.indptr[i + 1]] for i in range(m.shape[0])]
        for m in (on_cpu.obsp["distances"].tocsr(), on_gpu.obsp["distances"].tocsr())
    ]
    overlap = M.knn_overlap(*nbrs)
    print(
        f"cupy vs numpy backend: Leiden ARI {ari:.6f}, PCA |corr| min {pca_corr:.8f}, "
        f"kNN overlap {overlap:.6f}, fallbacks {len(resource_fallbacks)}, device "
        f"{on_gpu.uns['gpu_sc'].get('device', cuda_status().device_name)}"
    )
    assert ari >= 0.95 and pca_corr >= 0.9999 and overlap >= 0.99  # the parity thresholds
