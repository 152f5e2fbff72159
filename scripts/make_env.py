"""Create .env from .env.example with fresh random secrets, unless .env exists already."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    target = ROOT / ".env"
    if target.exists():
        return 0
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line in ("SECRET_KEY=", "JWT_SECRET_KEY="):
            line += secrets.token_hex(32)
        lines.append(line)
    target.write_text("\n".join(lines) + "\n")
    target.chmod(0o600)
    print("created .env with fresh secrets", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
