"""Where OpenFace's FeatureExtraction is: `$OPENFACE_BIN`, else on PATH.

Apart from `tasks.extractors.openface` (which imports numpy, pyarrow and pandas) so that a command
can say the binary is missing at once, before any of those load.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tasks.errors import SetupError

BINARY = "FeatureExtraction"
INSTALL = ("build OpenFace 2.x (https://github.com/TadasBaltrusaitis/OpenFace/wiki#installation), then set "
           "OPENFACE_BIN to its FeatureExtraction or put that on PATH")


def find_binary(configured: str | None) -> Path:
    """The FeatureExtraction to run; `SetupError` naming OPENFACE_BIN and how to install it."""
    if configured:
        path = Path(configured).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise SetupError(f"OPENFACE_BIN={configured} is not an executable file; {INSTALL}")
        return path.resolve()
    found = shutil.which(BINARY)
    if not found:
        raise SetupError(f"OpenFace's {BINARY} not found (OPENFACE_BIN is unset and it is not on PATH); {INSTALL}")
    return Path(found).resolve()
