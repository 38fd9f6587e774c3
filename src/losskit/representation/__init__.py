"""representation (to be built)."""

__all__: list[str] = []
