"""embtune integrations (import name ``embtune_integrations``): LangChain and DocsGPT shims."""
