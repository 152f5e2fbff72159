"""Azure OpenAI: OpenAI's dialect, addressed by deployment, with an api-key header and an api-version query.

Shapes from the openai SDK's lib/azure.py: {endpoint}/openai/deployments/{deployment}/{path}?api-version=...
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from app.providers.openai import OpenAIAdapter

# The last dated GA version of the deployments-based inference API (Azure's table lists v1 as its successor);
# it takes stream_options.include_usage, which the gateway's token accounting needs. Override with
# options["api_version"].
DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIAdapter(OpenAIAdapter):
    """settings.base_url is the resource endpoint; the upstream model name is the deployment name."""

    type = "azure"

    def _url(self, path: str, model: str) -> str:
        endpoint = self.settings.base_url.rstrip("/")
        query = urlencode({"api-version": self.settings.options.get("api_version") or DEFAULT_API_VERSION})
        return f"{endpoint}/openai/deployments/{quote(model, safe='')}/{path}?{query}"

    def _auth_headers(self) -> dict[str, str]:
        bearer = super()._auth_headers()["Authorization"]  # reuses its missing-key check
        return {"api-key": bearer.removeprefix("Bearer ")}
