"""Container health check: exit 0 when lcfin answers 200 on a path (default /health/ready).

    python healthcheck.py [/health/ready]

Standard library only, so it runs in any image. The port is the one `lcfin serve` binds:
LCFIN_PORT, else PORT, else 8000 (the images set PORT=7860).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    """Probe http://127.0.0.1:<port><path>; 0 on HTTP 200, 1 otherwise (with the reason)."""
    path = argv[0] if argv else "/health/ready"
    port = os.environ.get("LCFIN_PORT") or os.environ.get("PORT") or "8000"
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        sys.stderr.write(f"{url}: {exc}\n")
        return 1
    if status != 200:
        sys.stderr.write(f"{url}: HTTP {status}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
