"""Integrations with optional third-party packages. Import each module directly."""
