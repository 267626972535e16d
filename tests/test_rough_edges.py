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
