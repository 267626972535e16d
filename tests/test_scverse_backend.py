"""gpu_sc as a backend of scanpy's backend dispatch (scverse-backends, Python >= 3.12).

scanpy 1.12.x does not dispatch yet, so the host here is built as scanpy's dispatch builds it:
a ``BackendDispatcher`` on the ``scanpy.backends`` entry point group wrapping scanpy's own
functions. gpu_sc must be found through its entry point (``pyproject.toml``), receive the
calls routed by name, give scanpy's results, and run scverse-backends' conformance runner
with scanpy's checks (normalize_total, neighbors, umap) plus the rest of the tutorial's steps.
Runs in scripts/test_newest.sh; skipped where scverse-backends is not installed.
"""

from __future__ import annotations

import functools
import inspect
from importlib.metadata import entry_points

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import gpu_sc

scverse_backends = pytest.importorskip("scverse_backends")
from scverse_backends.testing import run_conformance  # noqa: E402

from gpu_sc._scanpy_compat import host_function  # noqa: E402
from gpu_sc.provenance import history  # noqa: E402
from gpu_sc.scverse_backend import ScanpyBackend  # noqa: E402

HOSTED = {
    "normalize_total": sc.pp.normalize_total,
    "log1p": sc.pp.log1p,
    "pca": sc.pp.pca,
    "neighbors": sc.pp.neighbors,
    "umap": sc.tl.umap,
    "leiden": sc.tl.leiden,
    "rank_genes_groups": sc.tl.rank_genes_groups,
    "aggregate": sc.get.aggregate,  # no gpu_sc step: stays scanpy's
}


@pytest.fixture(autouse=True)
def engine_on_numpy(monkeypatch):
    """gpu_sc's own default, ``"auto"``, runs scanpy's code where CUDA is unusable (here):
    the engine on NumPy stands in for the GPU."""
    monkeypatch.setattr(gpu_sc.settings, "backend", "numpy")


@pytest.fixture(scope="module")
def host():
    """scanpy's functions behind a dispatcher configured as scanpy's (entry point group,
    reserved ``gpu``, rapids-singlecell trusted)."""
    dispatcher = scverse_backends.BackendDispatcher(
        entrypoint_group="scanpy.backends",
        host_name="scanpy",
        trusted_backends={
            "rapids-singlecell": {"aliases": ["cuda", "rapids"], "package": "rapids-singlecell"}
        },
        reserved_backends={"gpu": "reserved for future GPU backends"},
    )
    funcs = {name: dispatcher.backend_dispatch(f) for name, f in HOSTED.items()}
    with pytest.warns(UserWarning, match="not in scanpy's trusted backends"):
        dispatcher.settings.backend = "gpu_sc"  # discovers; warns once (not trusted)
    dispatcher.settings.backend = "cpu"
    return dispatcher, funcs


def _counts() -> ad.AnnData:
    rng = np.random.default_rng(0)
    base = rng.poisson(1.0, size=(60, 40)).astype(np.float32)
    base[:30, :10] += rng.poisson(6.0, size=(30, 10))  # two groups of cells
    return ad.AnnData(sp.csr_matrix(base))


def _continuous() -> ad.AnnData:
    """Values without tied distances (counts have many: kNN may pick either neighbour)."""
    rng = np.random.default_rng(1)
    return ad.AnnData(rng.normal(size=(60, 8)).astype(np.float32))


def _dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def test_entry_point_names_the_backend():
    (ep,) = [ep for ep in entry_points(group="scanpy.backends") if ep.name == "gpu_sc"]
    backend = ep.load()()
    assert backend.name == "gpu_sc"
    assert {"normalize_total", "pca", "neighbors", "leiden", "umap"} <= set(backend.functions())
    # the installed scanpy's signature, less gpu_sc's own backend= (the dispatcher's keyword)
    sig = inspect.signature(backend.pca)
    assert "backend" not in sig.parameters
    assert list(sig.parameters) == [p for p in inspect.signature(sc.pp.pca).parameters]


def test_discovered_with_its_alias(host):
    dispatcher, _ = host
    assert "gpu_sc" in dispatcher.available_backend_names()
    assert isinstance(dispatcher.get_backend("gpu-sc"), ScanpyBackend)


def test_calls_are_routed_to_gpu_sc_and_give_scanpys_result(host):
    _, f = host
    ours, ref = _counts(), _counts()
    f["normalize_total"](ours, target_sum=1e4, backend="gpu_sc")
    f["normalize_total"](ref, target_sum=1e4)  # the settings' backend: cpu
    np.testing.assert_array_equal(_dense(ours.X), _dense(ref.X))
    (step,) = history(ours)
    assert step["step"] == "normalize_total" and step["backend"] in ("numpy", "cupy")
    assert "gpu_sc" not in ref.uns


def test_use_backend_runs_the_tutorial_steps_on_gpu_sc(host):
    dispatcher, f = host
    ours, ref = _counts(), _counts()
    for adata, backend in ((ours, "gpu_sc"), (ref, "cpu")):
        with dispatcher.settings.use_backend(backend):
            f["normalize_total"](adata, target_sum=1e4)
            f["log1p"](adata)
            f["pca"](adata, n_comps=10)
            f["neighbors"](adata, n_neighbors=10)
            f["leiden"](adata, flavor="igraph", n_iterations=2, directed=False)
            f["rank_genes_groups"](adata, "leiden", method="t-test")
            agg = f["aggregate"](adata, "leiden", func="sum")  # scanpy's: no gpu_sc step
            assert agg.n_obs == adata.obs["leiden"].nunique()
    assert [s["step"] for s in history(ours)] == [
        "normalize_total",
        "log1p",
        "pca",
        "neighbors",
        "leiden",
        "rank_genes_groups",
    ]
    assert {s["backend"] for s in history(ours)} <= {"numpy", "cupy"}
    np.testing.assert_allclose(_dense(ours.X), _dense(ref.X), rtol=1e-6)
    # float32 PCA by another solver: equal to rounding (the parity suite bounds it)
    np.testing.assert_allclose(
        np.abs(ours.obsm["X_pca"]), np.abs(ref.obsm["X_pca"]), rtol=1e-3, atol=1e-4
    )
    same_edges = (_dense(ours.obsp["distances"]) > 0) == (_dense(ref.obsp["distances"]) > 0)
    assert same_edges.mean() > 0.99


def _check(name, make_call, compare, data=_counts):
    def check(backend_name: str) -> None:
        ours, ref = data(), data()
        make_call(ours, backend_name)
        make_call(ref, "cpu")
        compare(ours, ref)

    return name, check


def _same(get, rtol=1e-6, atol=0.0):
    def compare(ours, ref):
        np.testing.assert_allclose(_dense(get(ours)), _dense(get(ref)), rtol=rtol, atol=atol)

    return compare


def test_conformance_harness(host):
    """scverse-backends' runner with scanpy's checks (normalize_total, neighbors, umap) and
    the other steps a tutorial runs: every one must pass."""
    dispatcher, f = host

    def umap_call(adata, backend):
        f["neighbors"](adata, n_neighbors=10, use_rep="X", backend="cpu")
        f["umap"](adata, random_state=0, backend=backend)

    def umap_ok(ours, ref):
        assert ours.obsm["X_umap"].shape == (ours.n_obs, 2)
        assert np.isfinite(ours.obsm["X_umap"]).all()

    tests = dict(
        [
            _check(
                "normalize_total",
                lambda a, b: f["normalize_total"](a, target_sum=10, backend=b),
                _same(lambda a: a.X),
            ),
            _check("log1p", lambda a, b: f["log1p"](a, backend=b), _same(lambda a: a.X)),
            _check(
                "neighbors",
                lambda a, b: f["neighbors"](a, n_neighbors=3, use_rep="X", backend=b),
                _same(lambda a: a.obsp["connectivities"], rtol=1e-5, atol=1e-6),
                _continuous,
            ),
            _check("umap", umap_call, umap_ok, _continuous),
            _check(
                "pca",
                lambda a, b: f["pca"](a, n_comps=5, backend=b),
                _same(lambda a: np.abs(a.obsm["X_pca"]), rtol=1e-3, atol=1e-4),
            ),
        ]
    )
    results = run_conformance(
        backend_name="gpu_sc", tests=tests, get_backend=dispatcher.get_backend
    )
    assert results == dict.fromkeys(tests, "PASSED")


def test_gpu_sc_reads_scanpys_function_below_a_dispatcher(host):
    """Once scanpy dispatches, gpu_sc's steps wrap and fall back to the function under the
    dispatcher: scanpy's signature without backend=, and no way back into gpu_sc."""
    _, f = host
    assert host_function(f["pca"]) is sc.pp.pca
    assert host_function(sc.pp.pca) is sc.pp.pca

    @functools.wraps(sc.pp.pca)
    def other(*a, **k):  # a wrapper that keeps the signature is not a dispatcher
        return sc.pp.pca(*a, **k)

    assert host_function(other) is other
