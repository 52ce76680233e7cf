"""embtune's built-in plugins (import name ``embtune_plugins``): one module per technique family.

Each module implements the ``register_*`` hook of its family, exactly as a third-party plugin
would; :data:`embtune_core.plugins.DEFAULT_PLUGINS` lists them.
"""
