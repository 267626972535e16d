"""Rough edges a new user met (issue 19, point 7), one test each."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_sc.datasets.pbmc3k import data_dir


def test_gpu_sc_data_names_the_data_folder_and_the_old_name_still_works_with_a_warning(
    monkeypatch, tmp_path
):
    monkeypatch.delenv("GPU_SC_DATA", raising=False)
    monkeypatch.delenv("GPU_SC_PBMC3K", raising=False)
    assert data_dir() is None
    monkeypatch.setenv("GPU_SC_PBMC3K", str(tmp_path / "old"))
    with pytest.warns(FutureWarning, match="GPU_SC_PBMC3K is deprecated; set GPU_SC_DATA="):
        assert data_dir() == tmp_path / "old"
    monkeypatch.setenv("GPU_SC_DATA", str(tmp_path))  # the new name wins, silently
    assert data_dir() == Path(tmp_path)


def test_pbmc3k_reads_the_folder_gpu_sc_data_names(monkeypatch, tmp_path):
    import gpu_sc

    d = tmp_path / "filtered_gene_bc_matrices" / "hg19"  # 10x's layout, 2 genes x 3 cells
    d.mkdir(parents=True)
    (d / "matrix.mtx").write_text(
        "%%MatrixMarket matrix coordinate integer general\n2 3 3\n1 1 5\n2 2 1\n1 3 2\n"
    )
    (d / "genes.tsv").write_text("G1\tGeneA\nG2\tGeneB\n")
    (d / "barcodes.tsv").write_text("AAA-1\nCCC-1\nGGG-1\n")
    monkeypatch.setenv("GPU_SC_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache"))  # nothing to fall back on
    a = gpu_sc.datasets.pbmc3k()
    assert a.shape == (3, 2) and list(a.var_names) == ["GeneA", "GeneB"]


@pytest.fixture(scope="module")
def small_graph():
    """300 synthetic cells, log-normalised, PCA and the kNN graph (numpy engine)."""
    import gpu_sc

    a = gpu_sc.datasets.synthetic(300, n_genes=300, seed=2)
    gpu_sc.pp.normalize_total(a, backend="numpy")
    gpu_sc.pp.log1p(a, backend="numpy")
    gpu_sc.pp.pca(a, n_comps=10, backend="numpy")
    gpu_sc.pp.neighbors(a, n_neighbors=10, backend="numpy")
    return a


@pytest.mark.parametrize("backend", ["scanpy", "numpy"])
@pytest.mark.parametrize("resolution", [0, -0.5])
def test_leiden_warns_on_a_resolution_of_zero_or_less_and_runs_it_as_scanpy(
    small_graph, backend, resolution
):
    """scanpy 1.11.5 accepts resolution <= 0 (one cluster): gpu_sc warns, in one line, and
    runs it (an error would break drop-in use)."""
    import gpu_sc

    a = small_graph.copy()
    with pytest.warns(
        UserWarning,
        match=r"^gpu_sc\.tl\.leiden: resolution=.* puts every cell in "
        "one cluster; use a resolution > 0",
    ) as rec:
        gpu_sc.tl.leiden(
            a,
            resolution=resolution,
            flavor="igraph",
            n_iterations=2,
            directed=False,
            backend=backend,
        )
    assert all("\n" not in str(w.message) for w in rec)
    assert a.obs["leiden"].nunique() == 1


def test_leiden_positive_resolution_does_not_warn(small_graph):
    import gpu_sc

    a = small_graph.copy()
    gpu_sc.tl.leiden(
        a, resolution=0.5, flavor="igraph", n_iterations=2, directed=False, backend="numpy"
    )  # warnings are errors: none may come
    assert a.obs["leiden"].nunique() >= 1


@pytest.mark.parametrize("method", ["t-test", "wilcoxon"])
def test_rank_genes_groups_on_a_single_group_warns_instead_of_silent_zeros(small_graph, method):
    """scanpy gives all-zero scores behind numpy's 'Mean of empty slice' warnings; the engine
    gives the same zeros with one line that says why."""
    import pandas as pd

    import gpu_sc

    a = small_graph.copy()
    a.obs["one"] = pd.Categorical(["all"] * a.n_obs)
    with pytest.warns(
        UserWarning,
        match="group 'all' of 'one' holds every cell, so there is no rest to compare it with",
    ):
        gpu_sc.tl.rank_genes_groups(a, "one", method=method, backend="numpy")
    scores = a.uns["rank_genes_groups"]["scores"]["all"]
    assert (scores == 0).all()


@pytest.mark.parametrize("backend", ["scanpy", "numpy"])
def test_two_cells_give_one_clear_line_instead_of_arpack_and_index_errors(small_graph, backend):
    """scanpy's UMAP spectral init dies in ARPACK (k >= N) and the engine's t-SNE in an
    IndexError on 2 cells: the boundary says what is wrong and what to do, on every backend."""
    import gpu_sc
    from gpu_sc.pipeline.validate import InputError

    two = small_graph[:2].copy()
    two.obsp["connectivities"] = two.obsp["connectivities"].tocsr()
    with pytest.raises(
        InputError,
        match=r"^gpu_sc\.tl\.umap: 2 cells: UMAP's spectral "
        r"initialisation .* needs at least 4 cells; analyse more cells or pass "
        "init_pos='random'$",
    ):
        gpu_sc.tl.umap(two, backend=backend)
    with pytest.raises(
        ValueError,
        match=r"perplexity \(30\) must be less than n_samples \(2\); "
        "lower perplexity or analyse more cells",
    ):
        gpu_sc.tl.tsne(two, backend=backend)


def test_step_line_names_each_step_while_it_runs():
    import io

    from gpu_sc._progress import StepLine

    plain, term = io.StringIO(), io.StringIO()
    for stream, tty in ((plain, False), (term, True)):
        line = StepLine(stream, tty=tty)
        for label in ("pca", "tsne"):
            line.before_step(None, label, None, (), {})
            line.after_step(None, label, None)
    assert plain.getvalue() == "gpu_sc: step 1: pca ...\ngpu_sc: step 2: tsne ...\n"
    # a terminal: written in place and cleared when the step ends
    assert term.getvalue() == (
        "\r\x1b[Kgpu_sc: step 1: pca ...\r\x1b[K\r\x1b[Kgpu_sc: step 2: tsne ...\r\x1b[K"
    )


@pytest.mark.parametrize(
    ("setting", "tty", "shown"),
    [
        ("", False, False),
        ("", True, True),
        ("0", True, False),
        ("1", False, True),
    ],
)
def test_pipeline_shows_the_step_line_on_a_terminal_unless_gpu_sc_progress_is_0(
    monkeypatch, setting, tty, shown
):
    """pipeline() hands the step line to its runner (on every backend, scanpy's included)."""
    import io
    import sys

    import gpu_sc
    from gpu_sc.pipeline import run as prun

    class Stderr(io.StringIO):
        def isatty(self):
            return tty

    err = Stderr()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("GPU_SC_PROGRESS", setting)
    seen = []
    # the steps themselves are not what is tested: the runner records its hooks and stops
    monkeypatch.setattr(prun.Runner, "run", lambda self: seen.append(self.hooks))
    a = gpu_sc.datasets.synthetic(200, n_genes=100, seed=0)
    gpu_sc.pipeline(a, backend="scanpy", copy=True)
    (hooks,) = seen
    assert any(type(h).__name__ == "StepLine" for h in hooks) is shown
