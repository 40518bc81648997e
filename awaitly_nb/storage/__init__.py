"""Where bytes live (stores, adapters) and how objects become bytes (serialisation)."""
