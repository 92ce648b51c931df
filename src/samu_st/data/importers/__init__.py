"""Importers: real corpora on disk → manifests (``OUT/<split>/<lang>.jsonl``) + an import report.

- :func:`import_covost2`: CoVoST-2 X→EN TSVs + Common Voice clips;
- :func:`import_commonvoice`: one Common Voice language folder (ASR data);
- :func:`import_hf_disk`: a Hugging Face ``datasets`` folder saved with ``save_to_disk``.

Bad rows and clips are skipped and counted in ``OUT/import_report.json`` (``ImportOptions.strict``
turns the first one into a :class:`~samu_st.errors.DataError` naming ``file:line``).
"""

from samu_st.data.importers.common import ImportOptions, ImportReport, SkipReason
from samu_st.data.importers.commonvoice import import_commonvoice
from samu_st.data.importers.covost2 import import_covost2
from samu_st.data.importers.hf_disk import import_hf_disk

__all__ = [
    "ImportOptions",
    "ImportReport",
    "SkipReason",
    "import_commonvoice",
    "import_covost2",
    "import_hf_disk",
]
