"""Patch the installed Portkey gateway 1.15.2 so streamed requests work on Node 20.

On Node, every streamed /v1/chat/completions fails with 'TypeError: immutable': ResponseService
.create() appends x-portkey-* headers to a fetch Response whose headers are guarded immutable
(Portkey issues #1389 and #1550). Its PR #1551 fixes it by re-wrapping the streamed response in a new
Response with a copy of the headers before updateHeaders() runs; this does the same to the bundled
build/start-server.js. Idempotent; fails loudly if the bundle does not look as expected.
"""

from __future__ import annotations

import sys
from pathlib import Path

BUNDLE = Path(__file__).resolve().parent / "node_modules/@portkey-ai/gateway/build/start-server.js"
MARKER = "/*bench-patch-1551*/"
# In create(): `r` is isResponseAlreadyMapped, `i` the response about to get the x-portkey headers.
ORIGINAL = "this.updateHeaders(i,n.cacheStatus,o),{response:i,responseJson:l,originalResponseJson:c}"
PATCHED = (
    MARKER + "r&&this.context.isStreaming&&(i=new Response(i.body,{status:i.status,"
    "statusText:i.statusText,headers:new Headers(i.headers)}))," + ORIGINAL
)


def patch(bundle: Path = BUNDLE) -> bool:
    """Apply the patch; True if the file changed, False if it was already patched."""
    text = bundle.read_text(encoding="utf-8")
    if MARKER in text:
        return False
    if text.count(ORIGINAL) != 1:
        raise SystemExit(f"patch_portkey: expected code not found exactly once in {bundle}")
    bundle.write_text(text.replace(ORIGINAL, PATCHED), encoding="utf-8")
    return True


if __name__ == "__main__":
    changed = patch(Path(sys.argv[1]) if len(sys.argv) > 1 else BUNDLE)
    print("patched" if changed else "already patched")
