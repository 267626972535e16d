"""The CuPy double's rules, one test each (sources in gpu_sc/testing/cupy_double/_rules.py).

These run everywhere (no GPU needed) and install the double themselves.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_sc.testing.cupy_double import DEVICE_NAME, install


@pytest.fixture
def cp():
    with install(device_bytes=64 << 20) as double:
        import cupy

        cupy.double = double
        yield cupy


@pytest.fixture
def csp(cp):
    import cupyx.scipy.sparse

    return cupyx.scipy.sparse


def _csr(shape=(6, 5), density=0.5, seed=0):
    return sp.random(*shape, density=density, format="csr", random_state=seed)


# -- device arrays and conversions ----------------------------------------------------------


def test_rule_device_array_is_not_a_numpy_array(cp):
    a = cp.arange(3)
    assert not isinstance(a, np.ndarray) and type(a).__module__ == "cupy"


def test_rule_implicit_conversion_to_numpy_raises_cupys_type_error(cp):
    a = cp.arange(3.0)
    for convert in (np.asarray, np.array, lambda x: np.ones(3)[x > 0]):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            convert(a)


def test_rule_explicit_transfers_work_and_are_counted(cp):
    host = np.arange(4.0)
    dev = cp.asarray(host)
    host[0] = 99  # device memory is a copy
    assert dev.get()[0] == 0 and cp.asnumpy(dev)[1] == 1
    c = cp.double.counters
    assert c.h2d == 1 and c.h2d_bytes == 32 and c.d2h == 2 and c.syncs == 2


def test_rule_reductions_return_0d_device_arrays_without_index(cp):
    a = cp.arange(5)
    for r in (a.sum(), cp.sum(a), a.max(), cp.count_nonzero(a), a.argmax()):
        assert isinstance(r, cp.ndarray) and r.ndim == 0
    with pytest.raises(TypeError):
        range(a.sum())  # no __index__ on cupy.ndarray (CuPy 14.2)
    with pytest.raises(TypeError):
        [1, 2, 3][a.argmax()]


def test_rule_scalar_conversions_work_and_count_as_syncs(cp):
    s = cp.arange(5).sum()
    before = cp.double.counters.syncs
    assert int(s) == 10 and float(s) == 10.0 and bool(s) and s.item() == 10
    assert cp.double.counters.syncs - before == 4


# -- operands -------------------------------------------------------------------------------


def test_rule_numpy_arrays_are_refused_by_ufuncs_and_operators(cp):
    dev, host = cp.arange(3.0), np.arange(3.0)
    for bad in (
        lambda: dev + host,
        lambda: host + dev,
        lambda: cp.add(dev, host),
        lambda: np.add(host, dev),
        lambda: cp.exp(host),
        lambda: dev < host,
    ):
        with pytest.raises(TypeError, match="Unsupported type"):
            bad()


def test_rule_ufuncs_refuse_lists(cp):
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.add(cp.arange(3), [1, 2, 3])


def test_rule_numpy_arrays_are_refused_by_cupy_functions(cp):
    dev, host = cp.arange(3.0), np.arange(3.0)
    for bad in (
        lambda: cp.concatenate([dev, host]),
        lambda: cp.where(dev > 0, host, dev),
        lambda: cp.sort(host),
        lambda: cp.ascontiguousarray(host),
    ):
        with pytest.raises(TypeError, match="Unsupported type"):
            bad()


def test_rule_python_and_numpy_scalars_are_operands(cp):
    dev = cp.arange(3.0)
    out = (dev * 2 + np.float64(1.5) - np.int32(1)) / np.float32(2)
    np.testing.assert_allclose(out.get(), (np.arange(3.0) * 2 + 0.5) / 2)


def test_rule_numpy_functions_dispatch_to_cupy_on_device_arrays(cp):
    dev = cp.arange(4.0)
    assert isinstance(np.sum(dev), cp.ndarray) and int(np.sum(dev)) == 6


def test_rule_only_cupy_14_names_exist(cp):
    assert cp.__version__ == "14.2.0"
    for missing in ("errstate", "ma", "lib_nosuch", "nanargmax_nosuch", "float128"):
        assert not hasattr(cp, missing), missing
    assert hasattr(cp, "lexsort") and hasattr(cp.add, "reduceat")
    with pytest.raises(AttributeError):
        cp.add.nosuchmethod  # noqa: B018


def test_rule_keywords_cupy_lacks_raise_type_error(cp):
    a = cp.arange(4.0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        cp.sum(a, where=a > 1)  # NumPy has where=, CuPy 14.2's sum does not
    with pytest.raises(TypeError, match="unexpected keyword"):
        a.sum(initial=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        cp.unique(a, equal_nan=False, sorted=True)


def test_rule_integer_array_indices_wrap_around(cp):
    a = cp.arange(5)
    assert a[cp.asarray(np.array([5, -6]))].get().tolist() == [0, 4]


def test_rule_fft_keeps_single_precision(cp):
    x = cp.asarray(np.ones((4, 4), dtype=np.float32))
    assert cp.fft.rfft2(x).dtype == np.complex64
    assert cp.fft.irfft2(cp.fft.rfft2(x), s=(4, 4)).dtype == np.float32


def test_rule_raw_kernels_are_not_emulated(cp):
    with pytest.raises(NotImplementedError, match="not emulated"):
        cp.RawKernel('extern "C" __global__ void f() {}', "f")
    with pytest.raises(NotImplementedError):
        cp.ElementwiseKernel("T x", "T y", "y = x", "copy")


# -- cupyx.scipy.sparse ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dia"])
def test_rule_cupyx_sparse_holds_only_cupyx_dtypes(csp, fmt):
    host = _csr().asformat(fmt)
    getattr(csp, f"{fmt}_matrix")(host.astype(np.float32))
    with pytest.raises(ValueError, match="Only bool, float32, float64"):
        getattr(csp, f"{fmt}_matrix")(host.astype(np.int64))
    with pytest.raises(ValueError, match="Only bool, float32, float64"):
        getattr(csp, f"{fmt}_matrix")(host).astype(np.int32)


def test_rule_cupyx_indices_are_int32_while_they_fit(csp):
    host = _csr()
    host.indices, host.indptr = host.indices.astype(np.int64), host.indptr.astype(np.int64)
    dev = csp.csr_matrix(host)
    assert dev.indices.dtype == np.int32 and dev.indptr.dtype == np.int32


def test_rule_only_cupyx_methods_exist(csp):
    csr = csp.csr_matrix(_csr())
    dia = csp.dia_matrix(_csr().todia())
    assert hasattr(csr, "eliminate_zeros") and not hasattr(dia, "eliminate_zeros")
    for name in ("resize", "tolil_nosuch", "getnnz_nosuch", "count_nonzero_nosuch"):
        assert not hasattr(csr, name)
    assert not hasattr(csr, "argsort")
    with pytest.raises(TypeError):
        dia[0]  # cupyx's dia_matrix is not subscriptable
    with pytest.raises(TypeError, match="unexpected keyword"):
        csr.sum(axis=0, keepdims=True)  # SciPy has keepdims on *_array only; cupyx none


def test_rule_cupyx_methods_that_raise_not_implemented_do_so(csp):
    csr = csp.csr_matrix(_csr())
    for name in ("todia", "tolil", "todok"):
        with pytest.raises(NotImplementedError):
            getattr(csr, name)()


def test_rule_scipy_does_not_see_cupyx_matrices(csp):
    dev = csp.csr_matrix(_csr())
    assert not sp.issparse(dev) and csp.issparse(dev) and not csp.issparse(_csr())
    assert np.asarray(dev).dtype == object  # no __array__: NumPy wraps it as an object


def test_rule_cupyx_products_refuse_host_operands(cp, csp):
    dev = csp.csr_matrix(_csr())
    with pytest.raises(TypeError, match="Unsupported type"):
        dev @ np.ones(5)
    with pytest.raises(TypeError, match="Unsupported type"):
        dev.multiply(_csr())
    assert (dev @ cp.ones(5)).shape == (6,)


def test_rule_cupyx_results_are_device_arrays(cp, csp):
    dev = csp.csr_matrix(_csr())
    s = dev.sum(axis=0)
    assert isinstance(s, cp.ndarray) and s.shape == (1, 5)  # 2-D, as cupyx (no np.matrix)
    assert isinstance(dev.T, csp.csc_matrix) and isinstance(dev.get(), sp.csr_matrix)


def test_rule_cupyx_eigsh_takes_only_lm_la_sa_and_does_not_raise_without_convergence(cp, csp):
    import cupyx.scipy.sparse.linalg as spla

    rng = np.random.default_rng(0)
    a = sp.random(200, 200, density=0.05, random_state=1)
    dev = csp.csr_matrix((a + a.T).tocsr())
    with pytest.raises(ValueError, match="which must be"):
        spla.eigsh(dev, k=3, which="SM")
    with pytest.raises(TypeError, match="unexpected keyword"):
        spla.eigsh(dev, k=3, sigma=0.5)  # SciPy's shift-invert: not in cupyx
    vals, vecs = spla.eigsh(
        dev, k=3, which="LA", maxiter=1, tol=1e-14, v0=cp.asarray(rng.standard_normal(200))
    )
    assert isinstance(vals, cp.ndarray) and vecs.shape == (200, 3)  # returned, not raised


# -- cupy.cuda --------------------------------------------------------------------------------


def test_rule_device_memory_is_finite_and_out_of_memory_raises(cp):
    free0, total = cp.cuda.runtime.memGetInfo()
    assert total == 64 << 20
    a = cp.zeros(1 << 20)  # 8 MiB
    assert cp.cuda.runtime.memGetInfo()[0] == free0 - (8 << 20)
    with pytest.raises(cp.cuda.memory.OutOfMemoryError, match="Out of memory"):
        cp.zeros(10 << 20)  # 80 MiB
    del a
    assert cp.cuda.runtime.memGetInfo()[0] == free0

    from gpu_sc.dispatch.registry import is_gpu_resource_error

    try:
        cp.zeros(10 << 20)
    except Exception as exc:
        assert is_gpu_resource_error(exc)


def test_rule_device_says_it_is_the_double_and_install_restores_everything():
    from gpu_sc.dispatch import cuda_status

    before = cuda_status()
    saved = sys.modules.get("cupy")
    with install():
        status = cuda_status()
        assert status.available and status.device_name == DEVICE_NAME
        assert "not a GPU" in status.device_name
    assert sys.modules.get("cupy") is saved
    assert cuda_status() == before


def test_counters_record_ops_bytes_and_flops(cp):
    a = cp.ones((8, 4), dtype=cp.float64)
    c = cp.double.counters
    c.reset()
    b = a @ cp.ones((4, 2))
    assert c.flops == 2 * 8 * 4 * 2 and b.shape == (8, 2)
    assert c.by_name.get("cupy.matmul") == 1 and c.bytes_written >= b.nbytes


def test_signature_list_is_cupy_14_2_and_covers_the_static_name_list():
    from pathlib import Path

    from gpu_sc.testing.cupy_double._rules import catalogue

    cat = catalogue()
    assert cat["cupy_version"] == "14.2.0"
    prefixes = {"xp": "cupy", "sparse": "cupyx.scipy.sparse", "special": "cupyx.scipy.special"}
    old = Path(__file__).parent / "data" / "cupy_names.txt"
    missing = []
    for line in old.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        alias, _, rest = line.strip().partition(".")
        full = f"{prefixes[alias]}.{rest}"
        parts = full.split(".")
        if full not in cat["names"] and ".".join(parts[:-1]) not in cat["names"]:
            missing.append(full)
    assert not missing, missing[:20]


# -- the engine's memory handling, driven by the double's finite device ---------------------


def _counts_and_reference():
    import gpu_sc

    adata = gpu_sc.datasets.synthetic(1200, n_genes=800, seed=2)
    ref = adata.copy()
    gpu_sc.pp.normalize_total(ref, target_sum=1e4, backend="numpy")
    return adata, ref


def test_small_device_streams_the_matrix_in_row_chunks_for_real(monkeypatch):
    import gpu_sc
    from gpu_sc.provenance import last as last_record

    adata, ref = _counts_and_reference()
    x = adata.X
    size = x.data.nbytes * 2 + x.indices.nbytes + x.indptr.nbytes  # float64 on the device
    monkeypatch.setattr(gpu_sc.settings, "chunk_rows", 100)
    with install(device_bytes=2 * size) as double:  # 3 working copies would not fit
        gpu_sc.pp.normalize_total(adata, target_sum=1e4, backend="cupy")
        assert last_record(adata)["backend"] == "cupy"
        assert double.counters.h2d >= adata.n_obs // 100  # one transfer per row block
        assert double.peak_bytes <= 2 * size
    assert abs(adata.X - ref.X).max() < 1e-9


def test_device_too_small_for_any_chunk_falls_back_to_scanpy_with_the_reason(monkeypatch):
    import gpu_sc
    from gpu_sc.provenance import last as last_record

    adata, ref = _counts_and_reference()
    before = adata.X.copy()
    monkeypatch.setattr(gpu_sc.settings, "chunk_rows", 100)
    with install(device_bytes=4096):
        gpu_sc.pp.normalize_total(adata, target_sum=1e4, backend="cupy")
    last = last_record(adata)
    assert last["backend"] == "scanpy" and "OutOfMemoryError" in last["fallback_reason"]
    assert abs(adata.X - ref.X).max() < 1e-6 and before.nnz == adata.X.nnz
