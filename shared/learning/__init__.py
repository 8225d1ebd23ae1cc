"""The learning kit both sides run: model building, training loop, backends, data sources."""
