"""The Dask path (issue 15): lazy input, block-by-block atlases on disk, and the preprocessing
steps QC -> PCA on a real ``distributed.LocalCluster`` of 2 worker processes, against the
in-memory numpy engine."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import gpu_sc
from gpu_sc.dispatch.provenance import pipeline_record, provenance

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

from gpu_sc.dask import DASK_STEPS  # noqa: E402  (needs dask)
from gpu_sc.dask import graph as dgraph  # noqa: E402
from gpu_sc.engine import dask_rows  # noqa: E402
from gpu_sc.pipeline.on_dask import run_qc_to_pca  # noqa: E402

AFTER_PCA_OFF = {
    k: {"enabled": False}
    for k in ("neighbors", "leiden", "paga", "umap", "tsne", "rank_genes_groups")
}
N_PCS_COMPARED = 30


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def client():
    """A real LocalCluster: 2 worker processes of 1 thread (closed after the module)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # distributed's start-up chatter (ports, sizes)
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        c = distributed.Client(cluster)
    c.run(__import__, "gpu_sc.dask.steps")  # the workers' imports, once, here
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(scope="module")
def pbmc_h5ad(pbmc3k_raw, tmp_path_factory):
    """PBMC3k raw counts as an .h5ad with CSR X."""
    a = pbmc3k_raw.copy()
    a.X = sp.csr_matrix(a.X)
    path = tmp_path_factory.mktemp("dask") / "pbmc3k.h5ad"
    a.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def pbmc_in_memory(pbmc3k_tutorial_numpy):
    """The in-memory numpy engine on the same counts: the session's tutorial run (shared with
    the other test files; its steps up to PCA are those of AFTER_PCA_OFF, and the steps after
    PCA change none of the keys compared here)."""
    return pbmc3k_tutorial_numpy


@pytest.fixture(scope="module")
def atlas_h5ad(tmp_path_factory):
    # 10k cells: 4 blocks of 3000 rows and 3 of 4096 (the sizes of the determinism checks)
    path = tmp_path_factory.mktemp("dask") / "atlas.h5ad"
    gpu_sc.datasets.write_synthetic_h5ad(path, 10_000, 1000, chunk_rows=6000, seed=7)
    return path


class _XReads:
    """Counts reads of datasets under ``/X`` made in this (the client) process."""

    def __init__(self, monkeypatch):
        self.reads: list[str] = []
        orig = h5py.Dataset.__getitem__

        def getitem(ds, key):
            if ds.name.startswith("/X/"):
                self.reads.append(ds.name)
            return orig(ds, key)

        monkeypatch.setattr(h5py.Dataset, "__getitem__", getitem)


class _Fetched:
    """Records the shape and kind of every array :func:`gpu_sc.engine.dask_rows.compute` brings
    back to the client."""

    def __init__(self, monkeypatch):
        self.items: list[tuple[str, tuple]] = []
        monkeypatch.setattr(dask_rows, "_fetch_hooks", [self._record])

    def _record(self, out):
        def walk(o):
            if isinstance(o, dict):
                for v in o.values():
                    walk(v)
            elif isinstance(o, (tuple, list)):
                for v in o:
                    walk(v)
            elif sp.issparse(o):
                self.items.append(("sparse", o.shape))
            elif isinstance(o, np.ndarray):
                self.items.append(("dense", o.shape))

        walk(out)


def _run_dask(path, chunk_rows, config=AFTER_PCA_OFF):
    a = gpu_sc.datasets.read_lazy(path, chunk_rows=chunk_rows)
    return run_qc_to_pca(a, config)


def _pc_corr(a, b, n=N_PCS_COMPARED) -> np.ndarray:
    return np.array([abs(np.corrcoef(a[:, i], b[:, i])[0, 1]) for i in range(n)])


# ---------------------------------------------------------------------------------------------
# lazy input and the on-disk atlas


def test_read_lazy_reads_no_matrix_and_gives_csr_row_blocks(pbmc_h5ad, pbmc3k_raw, monkeypatch):
    reads = _XReads(monkeypatch)
    a = gpu_sc.datasets.read_lazy(pbmc_h5ad, chunk_rows=1000)
    assert reads.reads == []  # opening reads obs/var only
    assert dgraph.is_dask(a.X)
    assert a.X.chunks == ((1000, 1000, 700), (pbmc3k_raw.n_vars,))
    assert isinstance(a.X._meta, sp.csr_matrix)
    assert list(a.obs_names) == list(pbmc3k_raw.obs_names)
    assert list(a.var_names) == list(pbmc3k_raw.var_names)
    with dask.config.set(scheduler="sync"):
        block = a.X.blocks[1].compute()
    assert isinstance(block, sp.csr_matrix)
    assert (block != sp.csr_matrix(pbmc3k_raw.X)[1000:2000]).nnz == 0


def test_read_lazy_reads_csc_x_as_csr_row_blocks_in_bounded_slices(
    pbmc3k_raw, tmp_path, monkeypatch
):
    """scanpy's and gpu_sc's 10x readers give CSC: opened lazily, each row block scans the
    stored values in slices (several here) and keeps its rows; nothing is read on opening."""
    from gpu_sc.datasets import lazy

    path = tmp_path / "csc.h5ad"
    a = pbmc3k_raw[:300].copy()
    a.X = sp.csc_matrix(a.X)
    a.write_h5ad(path)
    reads = _XReads(monkeypatch)
    monkeypatch.setattr(lazy, "CSC_SCAN_ENTRIES", 10_000)  # ~60 slices of the 300 cells
    got = gpu_sc.datasets.read_lazy(path, chunk_rows=128)
    assert reads.reads == []
    assert got.X.chunks == ((128, 128, 44), (a.n_vars,)) and got.X.dtype == a.X.dtype
    assert isinstance(got.X._meta, sp.csr_matrix)
    with dask.config.set(scheduler="sync"):
        blocks = [got.X.blocks[i].compute() for i in range(3)]
    assert all(isinstance(b, sp.csr_matrix) and b.has_sorted_indices for b in blocks)
    assert (sp.vstack(blocks).tocsr() != sp.csr_matrix(a.X)).nnz == 0
    assert len(reads.reads) > 3 * 2 * 10  # indices and values, slice by slice, each block

    # the preprocessing on it: the same blocks as from a CSR file, so the same bits
    csr_path = tmp_path / "csr.h5ad"
    a.X = sp.csr_matrix(a.X)
    a.write_h5ad(csr_path)
    monkeypatch.undo()  # the reads counter too: the steps below read the matrix
    with dask.config.set(scheduler="sync"):
        from_csc, from_csr = _run_dask(path, chunk_rows=128), _run_dask(csr_path, chunk_rows=128)
    assert list(from_csc.var_names) == list(from_csr.var_names)
    np.testing.assert_array_equal(from_csc.obsm["X_pca"], from_csr.obsm["X_pca"])


def test_read_lazy_refuses_dense_x_with_the_remedy(pbmc3k_raw, tmp_path):
    path = tmp_path / "dense.h5ad"
    a = pbmc3k_raw[:50, :100].copy()
    a.X = a.X.toarray()
    a.write_h5ad(path)
    with pytest.raises(ValueError, match="row blocks need sparse CSR .or CSC.; rewrite"):
        gpu_sc.datasets.read_lazy(path)


def _write_10x_v3(path, adata):
    x = sp.csr_matrix(adata.X).astype(np.int32)  # cells x genes CSR == genes x cells CSC
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = x.data, x.indices, x.indptr.astype(np.int64)
        g["shape"] = np.array([adata.n_vars, adata.n_obs], dtype=np.int32)
        g["barcodes"] = np.array(adata.obs_names, dtype="S")
        ft = g.create_group("features")
        ft["id"] = np.array(adata.var["gene_ids"], dtype="S")
        ft["name"] = np.array(adata.var_names, dtype="S")
        ft["feature_type"] = np.array(["Gene Expression"] * adata.n_vars, dtype="S")
        ft["genome"] = np.array(["hg19"] * adata.n_vars, dtype="S")
        ft["_all_tag_keys"] = np.array([b"genome"])


def _write_10x_v2(path, adata):
    x = sp.csr_matrix(adata.X).astype(np.int32)
    with h5py.File(path, "w") as f:
        g = f.create_group("hg19")
        g["data"], g["indices"], g["indptr"] = x.data, x.indices, x.indptr.astype(np.int64)
        g["shape"] = np.array([adata.n_vars, adata.n_obs], dtype=np.int32)
        g["barcodes"] = np.array(adata.obs_names, dtype="S")
        g["genes"] = np.array(adata.var["gene_ids"], dtype="S")
        g["gene_names"] = np.array(adata.var_names, dtype="S")


@pytest.mark.parametrize("layout", ["v3", "v2"])
def test_read_lazy_10x_h5_matches_scanpy(pbmc3k_raw, tmp_path, layout):
    import scanpy as sc

    path = tmp_path / "small_10x.h5"
    (_write_10x_v3 if layout == "v3" else _write_10x_v2)(path, pbmc3k_raw[:300].copy())
    ref = sc.read_10x_h5(path)
    a = gpu_sc.datasets.read_lazy(path, chunk_rows=128)
    assert a.X.chunks[0] == (128, 128, 44)
    with dask.config.set(scheduler="sync"):
        x = a.X.compute()
    assert x.dtype == ref.X.dtype == np.float32
    assert (x != ref.X).nnz == 0
    assert list(a.var_names) == list(ref.var_names)
    assert list(a.obs_names) == list(ref.obs_names)
    assert list(a.var["gene_ids"]) == list(ref.var["gene_ids"])


def test_write_synthetic_h5ad_is_the_generator_matrix_whatever_the_chunking(tmp_path):
    import anndata as ad

    ref = gpu_sc.datasets.synthetic(3000, 300, seed=5)
    for rows in (700, 5000):
        path = tmp_path / f"s{rows}.h5ad"
        info = gpu_sc.datasets.write_synthetic_h5ad(path, 3000, 300, chunk_rows=rows, seed=5)
        got = ad.read_h5ad(path)
        assert info["nnz"] == ref.X.nnz
        assert isinstance(got.X, sp.csr_matrix)
        assert np.array_equal(got.X.indptr, ref.X.indptr)
        assert np.array_equal(got.X.indices, ref.X.indices)
        assert np.array_equal(got.X.data, ref.X.data)
        assert got.obs.equals(ref.obs)
        assert list(got.var_names) == list(ref.var_names)


def test_write_synthetic_h5ad_calibrates_nonzeros_per_cell(tmp_path):
    info = gpu_sc.datasets.write_synthetic_h5ad(
        tmp_path / "n.h5ad", 2000, 1000, nnz_per_cell=250, seed=1
    )
    assert abs(info["nnz"] / 2000 - 250) < 0.06 * 250


# ---------------------------------------------------------------------------------------------
# QC -> PCA on the cluster


def test_step_table_has_the_engine_signature():
    import inspect

    for name, fn in DASK_STEPS.items():
        params = list(inspect.signature(fn).parameters)
        assert params[:2] == ["adata", "ctx"], name


def test_pbmc3k_on_two_workers_matches_the_in_memory_engine(
    client, pbmc_h5ad, pbmc_in_memory, monkeypatch
):
    ref = pbmc_in_memory
    reads, fetched = _XReads(monkeypatch), _Fetched(monkeypatch)
    a = _run_dask(pbmc_h5ad, chunk_rows=700)

    assert list(a.obs_names) == list(ref.obs_names)  # same cells after every filter
    assert list(a.var_names) == list(ref.var_names)  # = the HVG set after the subset
    for col in ("n_genes", "n_genes_by_counts", "total_counts", "total_counts_mt", "pct_counts_mt"):
        np.testing.assert_array_equal(a.obs[col].to_numpy(), ref.obs[col].to_numpy(), col)
    np.testing.assert_allclose(a.var["dispersions_norm"], ref.var["dispersions_norm"], rtol=1e-5)
    corr = _pc_corr(a.obsm["X_pca"], ref.obsm["X_pca"])
    assert corr.min() >= 0.9999, corr
    np.testing.assert_allclose(
        a.uns["pca"]["variance_ratio"], ref.uns["pca"]["variance_ratio"], rtol=1e-5
    )
    from sklearn.metrics import adjusted_rand_score

    from gpu_sc.bench.dask_atlas import leiden_labels  # the tutorial's kNN + Leiden, numpy

    ari = adjusted_rand_score(leiden_labels(a.obsm["X_pca"]), leiden_labels(ref.obsm["X_pca"]))
    assert ari >= 0.95, ari

    # the matrix was never read nor brought back on the client: only statistics were
    assert dgraph.is_dask(a.X)  # still lazy after PCA
    assert reads.reads == []
    assert fetched.items and all(kind == "dense" for kind, _ in fetched.items)
    n_genes = a.n_vars
    for _, shape in fetched.items:
        if len(shape) == 2:
            assert shape[1] <= 50 or shape == (n_genes, n_genes) or shape[0] <= 4, shape
    prov = provenance(a)
    assert [p["step"] for p in prov if p["backend"] == "dask"] == [
        "filter_cells",
        "filter_genes",
        "calculate_qc_metrics",
        "normalize_total",
        "log1p",
        "highly_variable_genes",
        "regress_out",
        "scale",
        "pca",
    ]
    assert a.uns["gpu_sc"]["dask"]["n_workers"] == 2
    assert a.uns["gpu_sc"]["dask"]["scheduler"].startswith("distributed")
    assert "2 workers" in prov[-1]["note"]


def test_pbmc3k_hvg_set_before_the_subset_is_identical(client, pbmc_h5ad, pbmc_in_memory):
    cfg = dict(
        AFTER_PCA_OFF,
        hvg={"subset": False},
        regress_out={"enabled": False},
        scale={"enabled": False},
        pca={"enabled": False},
    )
    a = _run_dask(pbmc_h5ad, chunk_rows=1000, config=cfg)
    ref = pbmc_in_memory.raw.var  # the in-memory run froze .raw before its subset
    hv = a.var_names[a.var["highly_variable"].to_numpy()]
    assert set(hv) == set(ref.index[ref["highly_variable"].to_numpy()])
    assert set(hv) == set(pbmc_in_memory.var_names)


@pytest.mark.filterwarnings("ignore:zero-centering a sparse:UserWarning")  # scanpy's, expected
def test_synthetic_atlas_same_result_on_two_workers_one_thread_and_other_chunks(client, atlas_h5ad):
    import anndata as ad

    cfg = dict(AFTER_PCA_OFF, regress_out={"enabled": False})  # a cheaper tail: scale -> PCA
    ref = gpu_sc.pipeline(ad.read_h5ad(atlas_h5ad), cfg, backend="numpy")
    two = _run_dask(atlas_h5ad, chunk_rows=3000, config=cfg)
    with dask.config.set(scheduler="sync"):  # one process, one thread, no cluster
        one = _run_dask(atlas_h5ad, chunk_rows=3000, config=cfg)
        other_chunks = _run_dask(atlas_h5ad, chunk_rows=4096, config=cfg)

    assert one.uns["gpu_sc"]["dask"]["scheduler"] == "local sync"
    assert two.uns["gpu_sc"]["dask"]["n_workers"] == 2
    # same seed, same blocks -> bitwise the same, whatever runs the blocks
    np.testing.assert_array_equal(two.obsm["X_pca"], one.obsm["X_pca"])
    np.testing.assert_array_equal(two.var["dispersions_norm"], one.var["dispersions_norm"])
    for run in (two, other_chunks):
        assert list(run.obs_names) == list(ref.obs_names)
        assert list(run.var_names) == list(ref.var_names)
        assert _pc_corr(run.obsm["X_pca"], ref.obsm["X_pca"]).min() >= 0.9999
    assert _pc_corr(two.obsm["X_pca"], other_chunks.obsm["X_pca"]).min() >= 0.99999


ATLAS_200K_CELLS = 200_000
LEIDEN_SUBSAMPLE = 20_000  # the engine's exact kNN is O(n^2): 200k cells take ~15 min here


@pytest.fixture(scope="module")
def atlas_200k_h5ad(tmp_path_factory):
    path = tmp_path_factory.mktemp("dask") / "atlas200k.h5ad"
    gpu_sc.datasets.write_synthetic_h5ad(
        path,
        ATLAS_200K_CELLS,
        500,
        nnz_per_cell=60,
        chunk_rows=50_000,
        seed=5,
        difficulty="separated",
    )
    return path


@pytest.mark.filterwarnings("ignore:zero-centering a sparse:UserWarning")  # scanpy's, expected
def test_atlas_of_200k_cells_on_two_workers_matches_the_in_memory_engine(client, atlas_200k_h5ad):
    import anndata as ad
    from sklearn.metrics import adjusted_rand_score

    from gpu_sc.bench.dask_atlas import leiden_labels

    cfg = dict(AFTER_PCA_OFF, filter_cells={"min_genes": 20})  # ~60 genes a cell
    ref = gpu_sc.pipeline(ad.read_h5ad(atlas_200k_h5ad), cfg, backend="numpy")
    lazy = gpu_sc.datasets.read_lazy(atlas_200k_h5ad, chunk_rows=25_000)
    out = run_qc_to_pca(lazy, cfg)

    assert ref.n_obs >= 0.85 * ATLAS_200K_CELLS  # the filters kept most cells (~176k)
    assert list(out.obs_names) == list(ref.obs_names)  # same cells after every filter
    assert list(out.var_names) == list(ref.var_names)  # the same HVG set
    assert list(out.raw.var_names) == list(ref.raw.var_names)
    assert _pc_corr(out.obsm["X_pca"], ref.obsm["X_pca"]).min() >= 0.9999
    assert pipeline_record(out)["dask"]["n_workers"] == 2
    # Leiden (the tutorial's kNN graph on the numpy engine) on the same fixed subsample of
    # cells from each path's PCA
    cells = np.random.default_rng(0).choice(out.n_obs, LEIDEN_SUBSAMPLE, replace=False)
    got, want = leiden_labels(out.obsm["X_pca"][cells]), leiden_labels(ref.obsm["X_pca"][cells])
    ari = adjusted_rand_score(got, want)
    assert ari >= 0.95, ari


NO_EMBEDDINGS = {"umap": {"enabled": False}, "tsne": {"enabled": False}}  # in-memory steps


@pytest.fixture(scope="module")
def pbmc_full_in_memory(pbmc3k_tutorial_numpy):
    """The whole tutorial in memory: the session's run (its embeddings are not compared)."""
    return pbmc3k_tutorial_numpy


def _cluster_pairs(a, b, min_jaccard=0.95):
    """(cluster of a, cluster of b) pairs whose cells agree (Jaccard >= ``min_jaccard``)."""
    pairs = []
    for ga in a.cat.categories:
        ca = set(a.index[a == ga])
        for gb in b.cat.categories:
            cb = set(b.index[b == gb])
            if len(ca & cb) / len(ca | cb) >= min_jaccard:
                pairs.append((ga, gb))
    return pairs


def test_pipeline_on_lazy_pbmc3k_uses_the_active_client_and_matches_the_in_memory_engine(
    client, pbmc_h5ad, pbmc_full_in_memory, monkeypatch, tmp_path
):
    import anndata as ad
    from sklearn.metrics import adjusted_rand_score

    import gpu_sc.dask.markers as dmarkers

    monkeypatch.setattr(dmarkers, "WILCOXON_CHUNK_NNZ", 300_000)  # several gene chunks
    fetched = _Fetched(monkeypatch)
    ref = pbmc_full_in_memory
    lazy = gpu_sc.datasets.read_lazy(pbmc_h5ad, chunk_rows=700)
    out = gpu_sc.pipeline(lazy, NO_EMBEDDINGS, backend="numpy")

    assert out is lazy and dgraph.is_dask(out.X) and dgraph.is_dask(out.raw.X)
    assert list(out.obs_names) == list(ref.obs_names)
    assert list(out.var_names) == list(ref.var_names)  # the same HVG set
    assert list(out.raw.var_names) == list(ref.raw.var_names)
    assert _pc_corr(out.obsm["X_pca"], ref.obsm["X_pca"]).min() >= 0.9999
    ari = adjusted_rand_score(out.obs["leiden"], ref.obs["leiden"])
    assert ari >= 0.95, ari
    # markers from the lazy .raw: t-test from block sums, wilcoxon from gene chunks
    pairs = _cluster_pairs(out.obs["leiden"], ref.obs["leiden"])
    assert len(pairs) >= 5, pairs
    for method in ("t_test", "wilcoxon"):
        got, want = out.uns[f"rank_genes_groups_{method}"], ref.uns[f"rank_genes_groups_{method}"]
        for g_out, g_ref in pairs:
            top = set(got["names"][g_out][:25]) & set(want["names"][g_ref][:25])
            assert len(top) >= 23, (method, g_out, len(top))
    gene_chunks = [shape for kind, shape in fetched.items if kind == "sparse"]
    assert len(gene_chunks) >= 2 * 4  # >= 2 chunks of the 4 row blocks, never the whole raw
    assert all(shape[1] < out.raw.n_vars for shape in gene_chunks)

    prov = provenance(out)
    on_dask = [p["step"] for p in prov if p["backend"] == "dask"]
    assert on_dask[-2:] == ["rank_genes_groups", "rank_genes_groups"]
    assert {p["backend"] for p in prov if p["step"] in ("neighbors", "leiden")} == {"numpy"}
    record = pipeline_record(out)
    assert record["dask"]["n_workers"] == 2 and record["dask"]["scheduler"].startswith("distr")

    # AnnData's own writer stores the lazy X and .raw block by block
    out.write_h5ad(tmp_path / "lazy.h5ad")
    back = ad.read_h5ad(tmp_path / "lazy.h5ad")
    assert (back.raw.X != out.raw.X.compute()).nnz == 0
    np.testing.assert_array_equal(back.X, out.X.compute())


def test_write_synthetic_h5ad_rejects_bad_arguments_with_the_generator_messages(tmp_path):
    with pytest.raises(ValueError, match="doublet_rate must be in"):
        gpu_sc.datasets.write_synthetic_h5ad(tmp_path / "x.h5ad", 100, 200, doublet_rate=0.7)
    with pytest.raises(ValueError, match="n_cells must be at least 1"):
        gpu_sc.datasets.write_synthetic_h5ad(tmp_path / "x.h5ad", 0, 200)
    assert not list(tmp_path.iterdir())  # nothing half-written
