"""The pipeline's config sections as dataclasses: scanpy's PBMC3k tutorial as defaults.
:class:`gpu_sc.pipeline.PipelineConfig` holds one of each (the catalogue's sections name them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# -- config sections: scanpy's PBMC3k tutorial as defaults ------------------------------------


@dataclass
class FilterCellsConfig:
    enabled: bool = True
    min_genes: int | None = 200
    min_counts: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class FilterGenesConfig:
    enabled: bool = True
    min_cells: int | None = 3
    min_counts: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class QCConfig:
    """QC metrics with the ``mt`` gene set, then the tutorial's cell filter (strict ``<``)."""

    enabled: bool = True
    mt_prefix: str = "MT-"
    max_n_genes_by_counts: float | None = 2500
    max_pct_counts_mt: float | None = 5
    extra: dict = field(default_factory=dict)


@dataclass
class NormalizeConfig:
    enabled: bool = True
    target_sum: float | None = 1e4
    exclude_highly_expressed: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class Log1pConfig:
    enabled: bool = True
    extra: dict = field(default_factory=dict)


@dataclass
class HVGConfig:
    """``flavor="seurat_v3"`` expects counts: it is then run on ``layers["counts"]``."""

    enabled: bool = True
    flavor: str = "seurat"
    min_mean: float = 0.0125
    max_mean: float = 3.0
    min_disp: float = 0.5
    n_top_genes: int | None = None
    batch_key: str | None = None
    subset: bool = True  # freeze .raw, then keep only the highly variable genes
    extra: dict = field(default_factory=dict)


@dataclass
class RegressOutConfig:
    enabled: bool = True
    keys: list[str] = field(default_factory=lambda: ["total_counts", "pct_counts_mt"])
    extra: dict = field(default_factory=dict)


@dataclass
class ScaleConfig:
    enabled: bool = True
    max_value: float | None = 10.0
    zero_center: bool = True
    extra: dict = field(default_factory=dict)


@dataclass
class PCAConfig:
    enabled: bool = True
    n_comps: int = 50
    svd_solver: str = "arpack"
    random_state: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class NeighborsConfig:
    enabled: bool = True
    n_neighbors: int = 10
    n_pcs: int | None = 40
    metric: str = "euclidean"
    random_state: int = 0
    #: kNN search of the engine: "auto" (exact below 2*10^5 cells, IVF-Flat from there on),
    #: "exact" or "ivf"; ``nlist``/``nprobe``: IVF-Flat's lists and probed lists (None: its
    #: defaults, :mod:`gpu_sc.kernels.ivf`). Passed as scanpy's ``transformer``.
    algorithm: str = "auto"
    nlist: int | None = None
    nprobe: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class LeidenConfig:
    enabled: bool = True
    resolution: float = 0.9
    flavor: str = "igraph"
    n_iterations: int = 2
    directed: bool = False
    random_state: int = 0
    key_added: str = "leiden"
    extra: dict = field(default_factory=dict)


@dataclass
class PagaConfig:
    enabled: bool = True
    extra: dict = field(default_factory=dict)


@dataclass
class UMAPConfig:
    enabled: bool = True
    init_pos: str = "paga"  # "paga" needs the PAGA step; otherwise scanpy's "spectral"
    min_dist: float = 0.5
    spread: float = 1.0
    random_state: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class TSNEConfig:
    enabled: bool = True
    n_pcs: int | None = None
    perplexity: float = 30
    random_state: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class RankGenesConfig:
    """One ``rank_genes_groups`` call per method, each under ``rank_genes_groups_<method>``
    (the first method also under scanpy's default key ``rank_genes_groups``).
    """

    enabled: bool = True
    methods: list[str] = field(default_factory=lambda: ["t-test", "wilcoxon"])
    n_genes: int | None = None  # scanpy default: all genes
    use_raw: bool | None = None
    pts: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class ScoreGenesConfig:
    """A gene-set score per cell (``tl.score_genes``) in ``obs[score_name]``; off by default.
    The default set is the S-phase genes of cell-cycle scoring (Tirosh et al. 2016, as in
    scanpy's cell-cycle notebook); with ``use_raw`` unset it scores ``.raw``.
    """

    enabled: bool = False
    gene_list: list[str] = field(
        default_factory=lambda: [
            "MCM5",
            "PCNA",
            "TYMS",
            "FEN1",
            "MCM2",
            "MCM4",
            "RRM1",
            "UNG",
            "GINS2",
            "MCM6",
            "CDCA7",
            "DTL",
            "PRIM1",
            "UHRF1",
            "MLF1IP",
            "HELLS",
            "RFC2",
            "RPA2",
            "NASP",
            "RAD51AP1",
            "GMNN",
            "WDR76",
            "SLBP",
            "CCNE2",
            "UBR7",
            "POLD3",
            "MSH2",
            "ATAD2",
            "RAD51",
            "RRM2",
            "CDC45",
            "CDC6",
            "EXO1",
            "TIPIN",
            "DSCC1",
            "BLM",
            "CASP8AP2",
            "USP1",
            "CLSPN",
            "POLA1",
            "CHAF1B",
            "BRIP1",
            "E2F8",
        ]
    )
    ctrl_size: int = 50
    n_bins: int = 25
    score_name: str = "S_score"
    random_state: int = 0
    use_raw: bool | None = None
    extra: dict = field(default_factory=dict)
