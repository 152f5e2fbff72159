"""The LLM gateway: the catalog of providers and models, and the use cases that call them."""
