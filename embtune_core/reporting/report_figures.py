"""Charts of the reports: matplotlib on its headless Agg backend, figures embedded as base64 PNG.

Shared by :mod:`embtune_core.reporting.report` and :mod:`embtune_core.reporting.report_training` (which the report imports).
"""

from __future__ import annotations

import base64
import io


def png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: never needs a display
    import matplotlib.pyplot as plt

    return plt
