"""The gpu-sc command line: run, demo, info; errors are one line and leave no partial file."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gpu_sc
from gpu_sc.cli import main
from gpu_sc.dispatch.provenance import provenance
from gpu_sc.io import read_h5ad, write_h5ad

FAST = """
[tsne]
enabled = false
[rank_genes_groups]
methods = ["t-test"]
"""


@pytest.fixture(scope="module")
def small_input(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "small.h5ad"
    write_h5ad(gpu_sc.datasets.synthetic(800, n_genes=600, seed=3), path)
    return path


@pytest.fixture
def fast_config(tmp_path):
    path = tmp_path / "fast.toml"
    path.write_text(FAST)
    return path


@pytest.mark.slow
def test_run_writes_result_with_provenance(small_input, fast_config, tmp_path, capsys):
    out = tmp_path / "res.h5ad"
    code = main(
        ["run", str(small_input), "-o", str(out), "--backend", "cpu", "--config", str(fast_config)]
    )
    assert code == 0
    printed = capsys.readouterr()
    assert "| leiden | scanpy |" in printed.out and "wrote" in printed.out
    assert "neighbors" in printed.err  # per-step progress lines
    assert "backend: scanpy (requested 'scanpy')" in printed.err  # what --backend resolved to
    res = read_h5ad(out)
    assert "leiden" in res.obs and "X_umap" in res.obsm and "X_tsne" not in res.obsm
    steps = [p["step"] for p in provenance(res)]
    assert "umap" in steps and "tsne" not in steps


def test_run_on_10x_directory(tmp_path, capsys):
    """The real 10x layout (matrix.mtx, genes.tsv, barcodes.tsv) is read directly."""
    from tests.conftest import PBMC3K_DIR

    mtx_dir = PBMC3K_DIR / "filtered_gene_bc_matrices" / "hg19"
    adata = gpu_sc.datasets.read(mtx_dir)
    assert adata.shape == (2700, 32738) and adata.var_names[0] == "MIR1302-10"
    tar = gpu_sc.datasets.read(PBMC3K_DIR / "pbmc3k_filtered_gene_bc_matrices.tar.gz")
    assert tar.shape == adata.shape and (tar.X != adata.X).nnz == 0


def test_missing_input_is_one_line_error_and_no_output(tmp_path, capsys):
    out = tmp_path / "res.h5ad"
    assert main(["run", str(tmp_path / "nope"), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input not found" in err[0]
    assert not out.exists()


def test_bad_config_names_the_field_and_writes_nothing(small_input, tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[leiden]\nresolutoin = 1.0\n")
    out = tmp_path / "res.h5ad"
    assert main(["run", str(small_input), "-o", str(out), "--config", str(cfg)]) == 1
    assert "config.leiden.resolutoin: unknown field" in capsys.readouterr().err
    assert not out.exists()


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import anndata as ad

    adata = ad.AnnData(gpu_sc.datasets.synthetic(50, n_genes=100).X)

    def broken(self, path, **kw):
        path.write_bytes(b"half")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", broken)
    with pytest.raises(OSError, match="disk full"):
        write_h5ad(adata, tmp_path / "out.h5ad")
    assert list(tmp_path.iterdir()) == []


def test_info_reports_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "scanpy" in out and "cupy" in out and "auto ->" in out


@pytest.mark.slow
def test_console_script_entry_point_runs_demo_and_writes_into_the_temp_dir(tmp_path):
    """Without -o the demo writes under the system's temporary directory, not into the current
    directory (it was a 47 MB file in the repository root), and says where."""
    import os

    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "gpu_sc.cli", "demo", "--cells", "600"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp / "gpu_sc_demo" / "demo.h5ad"
    assert "ARI vs ground truth" in proc.stdout and out.exists()
    assert f"wrote {out}" in proc.stdout
    assert not list(cwd.iterdir())


def test_version_names_gpu_sc_scanpy_and_anndata(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"gpu-sc {version('gpu-sc')} (scanpy {version('scanpy')}, anndata ")
    assert "\n" not in line


def test_run_dask_on_a_local_cluster_writes_a_result_anndata_reads(
    small_input, fast_config, tmp_path, capsys
):
    import anndata as ad

    pytest.importorskip("distributed")
    out = tmp_path / "res.h5ad"
    code = main(
        [
            "run",
            str(small_input),
            "-o",
            str(out),
            "--config",
            str(fast_config),
            "--dask",
            "--workers",
            "2",
            "--memory-limit",
            "1GB",
            "--chunk-rows",
            "300",
        ]
    )
    assert code == 0
    printed = capsys.readouterr()
    assert "dask: LocalCluster of 2 workers (memory limit 1GB each)" in printed.err
    assert "--scheduler ADDRESS" in printed.err  # how to use a cluster of several machines
    assert ", lazily)" in printed.err  # the matrix was not read
    res = ad.read_h5ad(out)  # AnnData alone reads it; X and .raw were written block by block
    assert "leiden" in res.obs and res.raw is not None
    rows = {p["step"]: p for p in provenance(res)}
    assert rows["pca"]["backend"] == "dask" and "2 workers" in rows["pca"]["note"]
    assert "3 blocks of <= 300 rows" in rows["filter_cells"]["note"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "2"], "--workers only apply with --dask"),
        (
            ["--dask", "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"],
            "with --scheduler the running cluster's workers are used",
        ),
        (["--dask", "--chunk-rows", "0"], "--chunk-rows must be at least 1"),
    ],
)
def test_dask_options_are_checked_before_anything_runs(
    small_input, tmp_path, capsys, extra, message
):
    out = tmp_path / "res.h5ad"
    assert main(["run", str(small_input), "-o", str(out), *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_dask_needs_a_file_it_can_read_lazily(tmp_path, capsys):
    from tests.conftest import PBMC3K_DIR

    out = tmp_path / "res.h5ad"
    mtx_dir = PBMC3K_DIR / "filtered_gene_bc_matrices" / "hg19"
    assert main(["run", str(mtx_dir), "-o", str(out), "--dask"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give an .h5ad or a 10x .h5 file" in err[0], err
    assert not out.exists()
