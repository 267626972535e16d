"""The catalogue's entry types: :class:`Step` (one step, declared once) and :class:`Section`
(a pipeline config section).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .rules import Num, OneOf, Rule

__all__ = ["Section", "Step"]

# -- the entries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step, declared once (see the module docstring)."""

    name: str
    #: public namespaces, scanpy's (``("pp",)``, ``("tl",)``, both for pca); ``()``: a step
    #: of the pipeline's own (subsetting, ``.raw``, layout), recorded with backend ``anndata``.
    namespaces: tuple[str, ...] = ()
    #: the pipeline config section that switches it on (None: always considered)
    section: str | None = None
    #: ``"module:function"`` the pipeline runner calls as ``run(runner, cfg, step)``; None:
    #: not in the pipeline (``gpu_sc.pipeline.plan:section_call`` calls the public function
    #: with the section's fields as scanpy parameters)
    run: str | None = None
    #: ``"module:function"``: the engine implementation ``func(adata, ctx, **scanpy_params)``
    engine: str | None = None
    #: ``"module:function"``: the Dask implementation ``func(adata, ctx, **scanpy_params)``,
    #: run instead of ``engine`` when the matrix the step reads is a Dask array (blocks of
    #: NumPy/scipy or CuPy/cupyx, the engine's kernels mapped over them; see :mod:`gpu_sc.dask`)
    dask: str | None = None
    #: the engine honours ``ctx.chunked`` (an out-of-memory error is retried in row chunks)
    chunkable: bool = False
    #: ``{parameter: rule}``: parameter values the engine implements (:func:`only` & co.)
    supports: Mapping[str, Rule] = field(default_factory=dict)
    #: rules on a combination of parameters (each maps all the call's parameters, scanpy's
    #: defaults applied, to None or the reason the engine does not implement them), checked
    #: after :attr:`supports`
    supports_together: tuple[Callable[[Mapping[str, Any]], str | None], ...] = ()
    #: what the step reads and writes in the AnnData (documentation; the generic parity stage
    #: ``obs_values`` compares the ``obs[{field}]`` columns listed in ``writes``, ``{field}``
    #: formatted with the config section's fields)
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    #: scanpy parameters the pipeline sets from the section's fields (not allowed in ``extra``)
    reserved: tuple[str, ...] = ()
    #: name of the stage factory in :mod:`gpu_sc.parity.stages` (``factory(step, cfg)``)
    parity: str | None = None
    #: extract keys that must be bitwise equal when the engine reruns the stage
    repeat_keys: tuple[str, ...] = ()
    #: ``{metric: (op, value, modes, why)}``: parity thresholds of metrics only this step
    #: reports (:class:`gpu_sc.parity.thresholds.Threshold`'s fields)
    thresholds: Mapping[str, tuple[str, float, tuple[str, ...], str]] = field(default_factory=dict)
    #: name of the roofline model in :mod:`gpu_sc.bench.floors`
    floor: str | None = None
    #: config sections this step cannot run without (benchmark ``--steps``)
    requires: tuple[str, ...] = ()
    #: reads a graph, not values: no value check at the step API's boundary
    graph_input: bool = False
    #: the matrix the step API's boundary checks (:func:`gpu_sc.steps.check_step_input`):
    #: ``"X"``: ``layers[layer]`` when ``layer`` is given, else ``adata.X``; ``"use_rep"``:
    #: ``obsm[use_rep]``, ``obsm['X_pca']`` where scanpy picks it for ``use_rep=None``, else
    #: ``adata.X``; ``"raw_or_X"``: as ``"X"``, but ``.raw.X`` when there is a ``.raw``, no
    #: ``layer`` and ``use_raw`` is not False
    values: str = "X"
    #: computes ``n_comps`` components: the boundary checks the AnnData has at least 2 cells
    #: and 2 genes and ``1 <= n_comps <= min(n_obs, n_vars)``
    components: bool = False
    #: fine on an empty AnnData (the pipeline says what emptied it after them)
    empty_ok: bool = False
    #: ``"module:function"``, ``func(adata, scanpy_params)``: scanpy's warnings and argument
    #: errors for this call, run just before the engine or the Dask path computes (see
    #: :mod:`gpu_sc.steps.scanpy_checks`; a fallback leaves them to scanpy's function)
    prelude: str | None = None
    #: the boundary rejects NaN/infinite values (False: the step computes with them as
    #: scanpy does, e.g. score_genes' NaN-ignoring means)
    finite_only: bool = True
    #: what scanpy's function returns for a bare matrix (ndarray or scipy sparse) instead of
    #: an AnnData; the engine runs it on a temporary AnnData holding the matrix and returns:
    #: ``"mask"``: the ``(mask, numbers)`` of ``inplace=False``; ``"matrix"``: the
    #: transformed matrix (written back into the caller's array where scanpy transforms it
    #: in place); ``"pca"``: ``obsm['X_pca']``, or with ``return_info`` the tuple
    #: ``(X_pca, components, variance_ratio, variance)``. None: scanpy's function takes an
    #: AnnData only (a matrix is handed to it as given, and it reports the error).
    array_returns: str | None = None
    #: the parameters the engine's array form honours; any other parameter away from
    #: scanpy's default (an AnnData-only one such as ``layer``, ``obsm``, ``mask_obs``), a
    #: Dask array, or arguments only scanpy's array function takes, run scanpy's function
    #: with exactly the caller's arguments (a fallback, logged and recorded)
    array_params: tuple[str, ...] = ()
    #: ``{parameter: rule}``: values scanpy accepts but that make no sense; the step API's
    #: boundary warns (one line, the rule's text) and runs them as scanpy does (raising would
    #: break drop-in use)
    cautions: Mapping[str, Rule] = field(default_factory=dict)
    #: ``too_few(n_obs, params)``: why ``n_obs`` cells are too few for this call, or None; the
    #: boundary raises it (an InputError, a ValueError as scanpy's own) before any backend runs
    too_few: Callable[[int, Mapping[str, Any]], str | None] | None = None

    @property
    def public(self) -> bool:
        return bool(self.namespaces)

    @property
    def scanpy(self) -> str | None:
        """``"pp.filter_cells"``: scanpy's function of this step."""
        return f"{self.namespaces[0]}.{self.name}" if self.namespaces else None

    def scanpy_func(self) -> Callable[..., Any]:
        import scanpy as sc

        from .._scanpy_compat import host_function  # below a backend dispatcher, if any

        return host_function(getattr(getattr(sc, self.namespaces[0]), self.name))


@dataclass(frozen=True)
class Section:
    """A pipeline config section: its dataclass of defaults and the constraints on its values."""

    name: str
    config: type
    constraints: Mapping[str, Num | OneOf] = field(default_factory=dict)
    #: the step whose scanpy function receives ``extra`` (None: the section takes no extra)
    step: str | None = None
    #: ``"module:function"``, ``func(section_config) -> list[str] | None``: the parameters of
    #: what the step's scanpy function passes its ``**kwargs`` on to, with this configuration;
    #: a list closes ``**kwargs`` to those names for the ``extra`` check (None: scanpy's
    #: signature as it is)
    kwargs: str | None = None
