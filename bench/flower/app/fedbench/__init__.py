"""Flower ServerApp and ClientApp of fedstream's side-by-side benchmark."""
