"""What ran where: ``gpu_sc.provenance``, the records of the steps gpu_sc has run.

>>> import gpu_sc
>>> gpu_sc.pp.log1p(adata)
>>> gpu_sc.provenance.last()  # the latest step's record: backend, params, seconds, fallback
>>> gpu_sc.provenance.history()  # every record of this process (the latest 1000)
>>> gpu_sc.provenance.provenance(result)  # the pipeline's records, from uns["gpu_sc"]

A step called on its own writes nothing into the AnnData (its outputs are scanpy's keys) unless
``gpu_sc.settings.record_steps`` is on; :func:`gpu_sc.pipeline` records every step, with
timings, in ``adata.uns["gpu_sc"]``. See :mod:`gpu_sc.dispatch.provenance`.
"""

from .dispatch.provenance import (
    HISTORY_SIZE,
    PROVENANCE_COLUMNS,
    clear_history,
    history,
    last,
    pipeline_record,
    provenance,
    recording,
)

__all__ = [
    "HISTORY_SIZE",
    "PROVENANCE_COLUMNS",
    "clear_history",
    "history",
    "last",
    "pipeline_record",
    "provenance",
    "recording",
]
