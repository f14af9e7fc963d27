"""The router's edge: API keys, scopes, per-key limits (``EdgeMiddleware``, ``Guard``).

Modules are imported where used: ``app.config`` imports ``app.security.config``,
which must not pull in the rest (``keys`` imports ``app.config``).
"""
